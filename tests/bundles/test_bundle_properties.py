"""MONAI's own property checks on every config of both bundles, as the Model Zoo runs them.

``ConfigWorkflow(config_file=..., workflow_type="train" | "infer")``, ``initialize()``, then
``check_properties()``: no required property is missing and no optional one has a wrong id. The check builds the
required properties (the trainer, the evaluator, the datasets), so it runs on tiny data in a temporary folder,
from an empty working directory that stays empty.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigWorkflow

from brats_cggm.adapters import synthetic
from tests.helpers.bundle_configs import BRATS, MULTIMODAL, REPO

TINY_BRATS = {"device": "cpu", "patch_size": [16, 16, 16], "network_def#features": [4, 8, 16]}
TINY_MULTIMODAL = {"device": "cpu", "batch_size": 4, "d_model": 8, "hidden_dim": 8, "num_heads": 2}
MOSI = REPO / "configs" / "tasks" / "mosi.yaml"

# name: (config files, workflow type)
CONFIGS = {
    "brats/train": ([BRATS / "train.yaml"], "train"),
    "brats/multi_gpu_train": ([BRATS / "train.yaml", BRATS / "multi_gpu_train.yaml"], "train"),
    "brats/inference": ([BRATS / "inference.yaml"], "infer"),
    "brats/evaluate": ([BRATS / "inference.yaml", BRATS / "evaluate.yaml"], "infer"),
    "multimodal/train": ([MULTIMODAL / "train.yaml", MOSI], "train"),
    "multimodal/multi_gpu_train": ([MULTIMODAL / "train.yaml", MOSI, MULTIMODAL / "multi_gpu_train.yaml"], "train"),
    "multimodal/inference": ([MULTIMODAL / "train.yaml", MOSI, MULTIMODAL / "inference.yaml"], "infer"),
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("name", list(CONFIGS))
def test_monai_check_properties_finds_nothing_missing(name, phantom_dataset, tmp_path, monkeypatch):
    files, workflow_type = CONFIGS[name]
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    if name.startswith("brats/"):
        configs, overrides = BRATS, {"dataset_dir": str(phantom_dataset), **TINY_BRATS}
    else:
        synthetic.write_mosi_pickle(tmp_path / "mosi.pkl", sizes={"train": 4, "valid": 2, "test": 2})
        configs, overrides = MULTIMODAL, {"dataset_dir": str(tmp_path / "mosi.pkl"), **TINY_MULTIMODAL}
    if workflow_type == "train":
        overrides["output_dir"] = str(tmp_path / "out")
    else:
        overrides["bundle_root"] = str(tmp_path / "bundle")
    if "multi_gpu" in name:  # its initialize creates the process group: one of world size 1
        port = str(_free_port())
        env = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
        for key, value in env.items():
            monkeypatch.setenv(key, value)
    workflow = ConfigWorkflow(
        config_file=[str(f) for f in files],
        workflow_type=workflow_type,
        meta_file=str(configs / "metadata.json"),
        logging_file=str(configs / "logging.conf"),
        **overrides,
    )
    workflow.initialize()
    try:
        assert workflow.check_properties() == []
    finally:
        workflow.finalize()
    assert os.listdir(cwd) == []


def test_multimodal_inference_writes_the_predictions_of_the_test_split(tmp_path, monkeypatch):
    """Train one tiny epoch on MOSI, then the inference config predicts its test split with models/model.pt."""
    monkeypatch.chdir(tmp_path)
    synthetic.write_mosi_pickle(tmp_path / "mosi.pkl", sizes={"train": 4, "valid": 2, "test": 3})
    common = {"dataset_dir": str(tmp_path / "mosi.pkl"), "max_epochs": 1, **TINY_MULTIMODAL}
    run = tmp_path / "run"
    for files, workflow_type, overrides in (
        (CONFIGS["multimodal/train"][0], "train", {"output_dir": str(run)}),
        (CONFIGS["multimodal/inference"][0], "infer", {"bundle_root": str(run)}),
    ):
        workflow = ConfigWorkflow(
            config_file=[str(f) for f in files],
            workflow_type=workflow_type,
            meta_file=str(MULTIMODAL / "metadata.json"),
            logging_file=str(MULTIMODAL / "logging.conf"),
            **common,
            **overrides,
        )
        workflow.initialize()
        workflow.run()
        workflow.finalize()
    lines = (run / "predictions" / "predictions.csv").read_text().splitlines()
    assert lines[0].split(",") == ["index", "prediction", "label", "output_0"]
    assert [line.split(",")[0] for line in lines[1:]] == ["0", "1", "2"]  # the test split's 3 items, in order
    # the predictions are those of the trained weights (models/model.pt) on the test split
    network = workflow.parser.get_parsed_content("network").eval()
    trained = torch.load(run / "models" / "model.pt", weights_only=True)
    assert all(torch.equal(v, trained[k]) for k, v in network.state_dict().items())
    batch = next(iter(workflow.parser.get_parsed_content("dataloader")))
    inputs, labels = workflow.parser.get_parsed_content("prepare_batch")(batch, torch.device("cpu"))
    with torch.no_grad():
        expected = network(inputs).reshape(-1)
    rows = [line.split(",") for line in lines[1:]]
    assert [float(r[1]) for r in rows] == pytest.approx(expected.tolist(), abs=1e-5)
    assert [float(r[2]) for r in rows] == pytest.approx(labels.reshape(-1).tolist())
    assert sorted(Path(tmp_path).iterdir()) == [tmp_path / "mosi.pkl", run]
