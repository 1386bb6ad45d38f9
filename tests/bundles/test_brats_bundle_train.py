"""The BraTS training bundle end to end through MONAI's ConfigWorkflow, with tiny overrides."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from event_files import scalar_tags
from monai.bundle import ConfigWorkflow

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "bundles" / "brats_cggm" / "configs"
TINY = {
    "max_epochs": 2,
    "val_interval": 1,
    "patch_size": [16, 16, 16],
    "network_def#features": [4, 8, 16],
    "phantoms": {"n": 4, "shape": [32, 32, 32], "seed": 0},
    "num_samples": 1,
    "sw_batch_size": 2,
    "device": "cpu",
}


def _workflow(config_files, **overrides) -> ConfigWorkflow:
    return ConfigWorkflow(
        config_file=[str(f) for f in config_files],
        meta_file=str(CONFIGS / "metadata.json"),
        logging_file=str(CONFIGS / "logging.conf"),
        workflow_type="train",
        **{**TINY, **overrides},
    )


@pytest.mark.parametrize("balancer", [None, "joint"])
def test_default_run_generates_phantoms_trains_and_reports(tmp_path: Path, balancer: str | None):
    files = [CONFIGS / "train.yaml"]
    if balancer is not None:
        files.append(REPO / "configs" / "balancers" / f"{balancer}.yaml")
    output_dir = tmp_path / "out"
    workflow = _workflow(files, phantom_dir=str(tmp_path / "phantoms"), output_dir=str(output_dir))
    workflow.initialize()
    assert not workflow.check_properties()
    workflow.run()
    workflow.finalize()

    assert len(list((tmp_path / "phantoms").glob("BraTS2021_*"))) == 4
    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert metrics["epoch"] == 2
    assert metrics["balancer"] == (balancer or "cggm")
    for key in ("val/dice/mean", "val/dice/tc", "val/dice/wt", "val/dice/et", "val/modality_dice/t1ce"):
        assert 0.0 <= metrics["validation"][key] <= 1.0
    assert (output_dir / "models" / "model.pt").is_file()
    assert (output_dir / "models" / "checkpoint.pt").is_file()

    tags = scalar_tags(output_dir)
    expected = {"train/loss", "val/dice/tc", "val/dice/wt", "val/dice/et", "val/dice/mean"}
    expected |= {f"train/modality_dice/{m}" for m in ("flair", "t1ce", "t1", "t2")}
    expected |= {f"val/modality_dice/{m}" for m in ("flair", "t1ce", "t1", "t2")}
    expected |= {f"grad_norm/{m}" for m in ("flair", "t1ce", "t1", "t2")}
    if balancer is None:
        expected |= {"cggm/L_gm", "cggm/B/flair", "cggm/epsilon/t2", "cggm/delta/t1", "cggm/cos/t1ce"}
    assert expected <= tags, expected - tags


def test_named_empty_dataset_dir_is_an_error_not_a_phantom_target(tmp_path: Path):
    empty = tmp_path / "my_brats"
    empty.mkdir()
    workflow = _workflow(
        [CONFIGS / "train.yaml"],
        dataset_dir=str(empty),
        phantom_dir=str(tmp_path / "phantoms"),
        output_dir=str(tmp_path / "out"),
    )
    with pytest.raises(Exception) as excinfo:
        workflow.initialize()
        workflow.run()
    assert str(empty) in "".join(str(e) for e in _chain(excinfo.value))
    assert not any(empty.iterdir())
    assert not (tmp_path / "phantoms").exists()


def _chain(error: BaseException):
    while error is not None:
        yield error
        error = error.__cause__ or error.__context__
