"""A training ``checkpoint.pt`` is usable wherever the docs offer it, and loads as data (``weights_only=True``).

The checkpoint is that of a real tiny training run (``tiny_run_dir``): ``brats-cggm-infer --checkpoint``,
``brats-cggm-valuate --checkpoint`` and ``inference.yaml --ckpt_path`` segment with it as with ``model.pt``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import run as bundle_run

from brats_cggm.cli.infer import main as infer_main
from brats_cggm.cli.valuate import main as valuate_main

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "bundles" / "brats_cggm" / "configs"
CASE = "BraTS2021_00000"

pytestmark = pytest.mark.filterwarnings("ignore:parsing config_file")


@pytest.fixture(scope="module")
def one_case(phantom_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data set folder with one phantom case. Read-only."""
    root = tmp_path_factory.mktemp("one") / "brats"
    shutil.copytree(phantom_dataset / CASE, root / CASE)
    return root


def _labels(path: Path) -> np.ndarray:
    return np.asanyarray(nib.load(str(path)).dataobj)


def test_every_file_of_a_training_run_loads_with_weights_only(tiny_run_dir: Path):
    checkpoint = torch.load(tiny_run_dir / "models" / "checkpoint.pt", weights_only=True)
    assert {"network", "aux_heads", "optimizer", "balancer", "trainer", "rng"} <= set(checkpoint)
    model = torch.load(tiny_run_dir / "models" / "model.pt", weights_only=True)
    assert model.keys() == checkpoint["network"].keys()


def test_infer_cli_with_the_training_checkpoint(one_case: Path, tiny_run_dir: Path, tmp_path: Path):
    common = ["--input", str(one_case), "--bundle", str(tiny_run_dir), "--device", "cpu"]
    checkpoint = tiny_run_dir / "models" / "checkpoint.pt"
    assert infer_main([*common, "--output-dir", str(tmp_path / "ckpt"), "--checkpoint", str(checkpoint)]) == 0
    assert infer_main([*common, "--output-dir", str(tmp_path / "model")]) == 0
    # one epoch: the best weights (model.pt) are the final ones (checkpoint.pt)
    name = f"{CASE}.nii.gz"
    np.testing.assert_array_equal(_labels(tmp_path / "ckpt" / name), _labels(tmp_path / "model" / name))


def test_valuate_cli_with_the_training_checkpoint(one_case: Path, tiny_run_dir: Path, tmp_path: Path):
    out = tmp_path / "valuation"
    argv = ["--bundle", str(tiny_run_dir), "--checkpoint", str(tiny_run_dir / "models" / "checkpoint.pt")]
    argv += ["--dataset-dir", str(one_case), "--output-dir", str(out), "--device", "cpu"]
    assert valuate_main(argv) == 0
    summary = json.loads((out / "shapley.json").read_text())
    assert summary["num_cases"] == 1 and summary["checkpoint"].endswith("checkpoint.pt")


def test_inference_bundle_with_the_training_checkpoint(one_case: Path, tiny_run_dir: Path, tmp_path: Path):
    outputs = {}
    for name in ("checkpoint.pt", "model.pt"):
        outputs[name] = tmp_path / name
        bundle_run(
            config_file=[str(CONFIGS / "inference.yaml"), str(tiny_run_dir / "configs" / "inference.json")],
            meta_file=str(CONFIGS / "metadata.json"),
            logging_file=str(CONFIGS / "logging.conf"),
            bundle_root=str(tiny_run_dir),
            ckpt_path=str(tiny_run_dir / "models" / name),
            dataset_dir=str(one_case),
            output_dir=str(outputs[name]),
            device="cpu",
        )
    name = f"{CASE}.nii.gz"
    np.testing.assert_array_equal(_labels(outputs["checkpoint.pt"] / name), _labels(outputs["model.pt"] / name))
