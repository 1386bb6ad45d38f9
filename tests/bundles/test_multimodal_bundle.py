"""The multimodal bundle with each task overlay, end to end through MONAI's ConfigWorkflow.

One epoch per task with CGGM and with joint training, on tiny data in the real formats and tiny random
networks: ``metrics.json`` (validation and test) and the TensorBoard tags are checked.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigWorkflow, verify_metadata

from brats_cggm.adapters import synthetic
from brats_cggm.core.events import read_scalars
from brats_cggm.engine.output_dir import RunExistsError

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "multimodal_cggm" / "configs"
TINY = {
    "max_epochs": 1,
    "batch_size": 8,
    "d_model": 8,
    "hidden_dim": 8,
    "num_heads": 2,
    "encoder_layers": 1,
    "fusion_layers": 1,
    "device": "cpu",
}
METRICS = {
    "mosi": ("acc2", "acc2_has0", "acc7", "f1", "f1_has0", "mae", "corr"),
    "iemocap": ("accuracy", "f1_weighted", "f1_macro"),
    "food101": ("accuracy", "f1_macro", "f1_weighted"),
}
MODALITIES = {"mosi": ("text", "audio", "vision"), "iemocap": ("text", "audio", "vision"), "food101": ("text", "image")}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every task's tiny data and the tiny BERT/ViT folders, written once for the module."""
    pytest.importorskip("h5py")
    pytest.importorskip("transformers")
    root = tmp_path_factory.mktemp("multimodal")
    synthetic.write_mosi_pickle(root / "mosi_data.pkl", sizes={"train": 8, "valid": 4, "test": 4})
    synthetic.write_iemocap_mmin(root / "iemocap", sizes={"trn": 8, "val": 4, "tst": 4})
    synthetic.write_iemocap_mult(root / "iemocap_data.pkl", sizes={"train": 8, "valid": 4, "test": 4})
    synthetic.write_food101_json(root / "food_json", sizes={"train": 6, "dev": 3, "test": 3})
    synthetic.write_food101_csv(root / "food_csv", sizes={"train": 9, "test": 3})
    synthetic.write_tiny_bert(root / "bert")
    synthetic.write_tiny_vit(root / "vit")
    return root


def _run(files: list[Path], **overrides) -> ConfigWorkflow:
    workflow = ConfigWorkflow(
        config_file=[str(f) for f in files],
        meta_file=str(BUNDLE / "metadata.json"),
        logging_file=str(BUNDLE / "logging.conf"),
        workflow_type="train",
        **{**TINY, **overrides},
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    return workflow


CASES = [
    ("mosi", "cggm", "mosi_data.pkl", {}),
    ("mosi", "joint", "mosi_data.pkl", {"utilization": "neg_mae"}),
    ("iemocap", "cggm", "iemocap", {}),
    ("iemocap", "joint", "iemocap_data.pkl", {}),
    ("food101", "cggm", "food_json", {"text_model": "bert", "image_model": "vit", "max_text_length": 8}),
    ("food101", "joint", "food_csv", {"text_model": "bert", "image_model": "vit", "val_fraction": 0.34}),
]


@pytest.mark.parametrize(("task", "balancer", "dataset", "options"), CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_one_epoch_writes_metrics_and_scalars(data_root, tmp_path, task, balancer, dataset, options):
    options = {k: str(data_root / v) if k.endswith("_model") else v for k, v in options.items()}
    files = [BUNDLE / "train.yaml", REPO / "configs" / "tasks" / f"{task}.yaml"]
    files.append(REPO / "configs" / "balancers" / f"{balancer}.yaml")
    output_dir = tmp_path / "out"
    workflow = _run(files, dataset_dir=str(data_root / dataset), output_dir=str(output_dir), **options)

    report = json.loads((output_dir / "metrics.json").read_text())
    assert report["task"] == task and report["balancer"] == balancer and report["epoch"] == 1
    assert report["test_checkpoint"] == "best"
    modalities = MODALITIES[task]
    for split, prefix in (("validation", "val"), ("test", "test")):
        names = [f"{prefix}/{n}" for n in METRICS[task]] + [f"{prefix}/modality_accuracy/{m}" for m in modalities]
        assert set(names) <= set(report[split]), set(names) - set(report[split])
        for name in names:
            value = report[split][name]
            assert math.isfinite(value)
            if not name.endswith(("/mae", "/corr")):
                assert 0.0 <= value <= 1.0, (name, value)
    sizes = report["data"]["sizes"]
    assert sizes["val"] >= 3 and sizes["test"] >= 3 and sizes["train"] >= 6

    tags = set(read_scalars(output_dir))
    epsilon = "train/modality_neg_mae" if options.get("utilization") == "neg_mae" else "train/modality_accuracy"
    expected = {
        "train/loss",
        "train/task_loss",
        "train/aux_loss",
        f"val/{METRICS[task][0]}",
        f"test/{METRICS[task][0]}",
    }
    expected |= {f"{epsilon}/{m}" for m in modalities} | {f"grad_norm/{m}" for m in modalities}
    expected |= {f"val/modality_accuracy/{m}" for m in modalities} | {f"test/modality_accuracy/{m}" for m in modalities}
    if balancer == "cggm":
        expected |= {"cggm/L_gm"} | {f"cggm/B/{m}" for m in modalities} | {f"cggm/epsilon/{m}" for m in modalities}
    assert expected <= tags, expected - tags

    # the test ran on the best weights but the live network (and the training checkpoint) keep the final ones
    checkpoint = torch.load(output_dir / "models" / "checkpoint.pt", map_location="cpu", weights_only=True)
    live = workflow.parser.get_parsed_content("network").state_dict()
    assert all(torch.equal(live[k], v) for k, v in checkpoint["network"].items())
    assert (output_dir / "models" / "model.pt").is_file() and (output_dir / "models" / "aux_heads.pt").is_file()


def test_task_overlays_set_the_paper_cggm_values(tmp_path):
    expected = {"mosi": (1.3, 0.2), "iemocap": (1.3, 0.2), "food101": (1.3, 0.05)}
    for task, (rho, lam) in expected.items():
        files = [
            BUNDLE / "train.yaml",
            REPO / "configs" / "tasks" / f"{task}.yaml",
            REPO / "configs/balancers/cggm.yaml",
        ]
        workflow = ConfigWorkflow(config_file=[str(f) for f in files], workflow_type="train", output_dir=str(tmp_path))
        assert workflow.parser.get_parsed_content("cggm_rho") == rho
        assert workflow.parser.get_parsed_content("cggm_lambda") == lam
        assert workflow.parser["balancer"]["rho"] == "@cggm_rho"


def test_last_epoch_validates_and_a_previous_run_is_kept_unless_overwritten(data_root, tmp_path):
    files = [BUNDLE / "train.yaml", REPO / "configs" / "tasks" / "mosi.yaml"]
    output_dir = tmp_path / "out"
    options = {"dataset_dir": str(data_root / "mosi_data.pkl"), "output_dir": str(output_dir), "val_interval": 2}
    _run(files, **options)  # one epoch: val_interval 2 does not divide it, yet it validates
    report = json.loads((output_dir / "metrics.json").read_text())
    assert math.isfinite(report["validation"]["val/acc2"]) and report["best_metric_epoch"] == 1
    assert (output_dir / "models" / "model.pt").is_file()

    before = {p: p.read_bytes() for p in output_dir.rglob("*") if p.is_file()}
    with pytest.raises(Exception) as excinfo:
        _run(files, **options)
    assert isinstance(excinfo.value.__cause__, RunExistsError)
    assert f"output_dir {output_dir} holds a previous run" in _messages(excinfo.value)
    assert {p: p.read_bytes() for p in output_dir.rglob("*") if p.is_file()} == before

    _run(files, **options, overwrite=True)
    assert len(list(output_dir.glob("events.out.tfevents.*"))) == 1


def _messages(error: BaseException) -> str:
    parts = []
    while error is not None:
        parts.append(str(error))
        error = error.__cause__ or error.__context__
    return "\n".join(parts)


def test_missing_overlay_or_dataset_dir_is_a_clear_error(tmp_path):
    mosi = [BUNDLE / "train.yaml", REPO / "configs" / "tasks" / "mosi.yaml"]
    cases = [
        ([BUNDLE / "train.yaml"], {}, r"configs/tasks/\{mosi,iemocap,food101\}\.yaml"),
        (mosi, {}, "--dataset_dir"),
        (mosi, {"dataset_dir": str(tmp_path / "nope.pkl")}, r"dataset_dir does not exist: .*nope\.pkl"),
    ]
    for files, overrides, pattern in cases:
        workflow = ConfigWorkflow(config_file=[str(f) for f in files], workflow_type="train", **TINY, **overrides)
        with pytest.raises(RuntimeError) as excinfo:
            workflow.parser.get_parsed_content("data")
        assert re.search(pattern, _messages(excinfo.value)), _messages(excinfo.value)


@pytest.mark.filterwarnings("ignore:No hash value provided")
def test_metadata_is_valid_against_the_shipped_schema(tmp_path):
    pytest.importorskip("jsonschema")
    schema = shutil.copy(BUNDLE / "schema" / "metadata_schema.json", tmp_path / "schema.json")
    verify_metadata(meta_file=str(BUNDLE / "metadata.json"), filepath=str(schema))
