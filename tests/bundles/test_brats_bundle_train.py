"""The BraTS training bundle end to end through MONAI's ConfigWorkflow, with tiny overrides."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigWorkflow
from monai.engines.utils import default_prepare_batch

from brats_cggm.core.events import read_scalars
from brats_cggm.engine.output_dir import ABORTED_DIR, LOCK_FILE, RunExistsError
from tests.helpers.crafted_files import code_running_checkpoint, unsafe_advice

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

    tags = set(read_scalars(output_dir))
    expected = {"train/loss", "val/dice/tc", "val/dice/wt", "val/dice/et", "val/dice/mean"}
    expected |= {f"train/modality_dice/{m}" for m in ("flair", "t1ce", "t1", "t2")}
    expected |= {f"val/modality_dice/{m}" for m in ("flair", "t1ce", "t1", "t2")}
    expected |= {f"grad_norm/{m}" for m in ("flair", "t1ce", "t1", "t2")}
    if balancer is None:
        expected |= {"cggm/L_gm", "cggm/B/flair", "cggm/epsilon/t2", "cggm/delta/t1", "cggm/cos/t1ce"}
        # the balancer's activity (docs/methods.md §0.3): at every epoch end and in metrics.json
        expected |= {"activity/cggm/B/flair/mean", "activity/cggm/neutral", "activity/cggm/clamped/t2"}
        assert 0.0 <= metrics["activity"]["cggm/neutral"] <= 1.0
        assert metrics["activity"]["cggm/B/t1/min"] <= metrics["activity"]["cggm/B/t1/max"]
    else:  # joint training acts on nothing
        assert "activity" not in metrics and not any(tag.startswith("activity/") for tag in tags)
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


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _train(output_dir: Path | str, phantom_dir: Path | None = None, **overrides) -> ConfigWorkflow:
    if phantom_dir is not None:
        overrides["phantom_dir"] = str(phantom_dir)
    workflow = _workflow([CONFIGS / "train.yaml"], output_dir=str(output_dir), **overrides)
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    return workflow


UMASK = 0o027


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One epoch with ``val_interval`` 2, into an existing empty ``output_dir``, under umask 027. Read-only."""
    root = tmp_path_factory.mktemp("finished")
    (root / "out").mkdir()  # an existing but empty output_dir holds no run: fine
    previous = os.umask(UMASK)
    try:
        _train(root / "out", root / "phantoms", max_epochs=1, val_interval=2)
    finally:
        os.umask(previous)
    return root


def _copy(finished_run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(finished_run / "out", tmp_path / "out"))


def test_the_last_epoch_validates_when_val_interval_does_not_divide_max_epochs(finished_run: Path):
    metrics = json.loads((finished_run / "out" / "metrics.json").read_text())
    assert 0.0 <= metrics["validation"]["val/dice/mean"] <= 1.0
    assert metrics["best_metric_epoch"] == 1
    assert (finished_run / "out" / "models" / "model.pt").is_file()


def test_every_file_a_run_writes_has_the_mode_the_umask_gives(finished_run: Path):
    out = finished_run / "out"
    written = [out / "metrics.json", out / "models" / "model.pt", out / "models" / "checkpoint.pt"]
    written += [out / "configs" / "inference.json", *out.glob("events.out.tfevents.*")]
    assert {str(p.relative_to(out)): oct(p.stat().st_mode & 0o777) for p in written} == {
        str(p.relative_to(out)): oct(0o666 & ~UMASK) for p in written
    }


def test_training_into_a_previous_run_is_refused_before_anything_is_written(finished_run: Path, tmp_path: Path):
    out = _copy(finished_run, tmp_path)
    before = _files(out)
    workflow = _workflow([CONFIGS / "train.yaml"], phantom_dir=str(finished_run / "phantoms"), output_dir=str(out))
    with pytest.raises(Exception) as excinfo:
        workflow.initialize()
        workflow.run()
    assert any(isinstance(e, RunExistsError) for e in _chain(excinfo.value))
    message = "".join(str(e) for e in _chain(excinfo.value))
    assert str(out) in message
    assert all(way in message for way in ("--resume true", "--output_dir", "--overwrite true"))
    assert _files(out) == before


def test_a_finished_run_leaves_no_lock_file(finished_run: Path):
    assert not (finished_run / "out" / LOCK_FILE).exists()


def test_a_run_that_fails_at_its_first_draw_is_retried_by_the_identical_command(phantom_dataset: Path, tmp_path: Path):
    data = Path(shutil.copytree(phantom_dataset, tmp_path / "data"))
    victim = sorted(data.rglob("*_flair.nii.gz"))[0]
    good = victim.read_bytes()
    victim.write_bytes(good[:200])  # a truncated input: the first draw fails, after the event file is opened
    command = {"dataset_dir": str(data), "output_dir": str(tmp_path / "out"), "cache": "none", "max_epochs": 1}
    with pytest.raises(Exception, match="ConfigExpression"):
        _train(**command)
    out = tmp_path / "out"
    dead = {p.name for p in out.glob("events.out.tfevents.*")}
    assert len(dead) == 1 and not list(out.glob("models/*.pt"))

    victim.write_bytes(good)
    _train(**command)  # the identical command, in the same process as a job retry could be
    assert json.loads((out / "metrics.json").read_text())["epoch"] == 1
    events = {p.name for p in out.glob("events.out.tfevents.*")}
    assert len(events) == 1 and not events & dead  # the new run's steps alone
    assert {p.name for p in (out / ABORTED_DIR).glob("*/events.out.tfevents.*")} == dead
    assert not (out / LOCK_FILE).exists()


def test_overwrite_replaces_the_previous_run_and_nothing_else(finished_run: Path, tmp_path: Path):
    out = _copy(finished_run, tmp_path)
    old_events = {p.name for p in out.glob("events.out.tfevents.*")}
    (out / "notes.txt").write_text("mine")
    _train(out, finished_run / "phantoms", max_epochs=1, val_interval=1, overwrite=True)
    events = {p.name for p in out.glob("events.out.tfevents.*")}
    assert len(events) == 1 and not events & old_events  # one run's events, not two runs' mixed
    assert (out / "notes.txt").read_text() == "mine"
    checkpoint = torch.load(out / "models" / "checkpoint.pt", weights_only=True)
    assert checkpoint["trainer"]["iteration"] == 2 and not (out / "models" / "checkpoint.prev.pt").exists()


def test_resume_from_a_damaged_checkpoint_keeps_the_good_one_and_clears_stale_temporaries(
    finished_run: Path, tmp_path: Path
):
    out = _copy(finished_run, tmp_path)
    models = out / "models"
    (models / "checkpoint.pt").rename(models / "checkpoint.prev.pt")  # the good one
    (models / "checkpoint.pt").write_bytes(b"cut short")
    stale = [models / ".checkpoint.pt.0a1b2c3d4e5f.tmp", models / ".model.pt.0a1b2c3d4e5f.tmp"]
    stale.append(out / ".metrics.json.0a1b2c3d4e5f.tmp")  # left by writes that were killed
    for path in stale:
        path.touch()
    with pytest.warns(UserWarning, match="using the previous one"):
        _train(out, finished_run / "phantoms", max_epochs=2, val_interval=2, resume=True)
    # the file that failed to load was replaced, not kept as the predecessor of the new checkpoint
    previous = torch.load(models / "checkpoint.prev.pt", weights_only=True)
    assert previous["trainer"]["iteration"] == 2
    assert torch.load(models / "checkpoint.pt", weights_only=True)["trainer"]["iteration"] == 4
    assert not [p for p in out.rglob("*.tmp")]


def test_a_crafted_resume_file_is_refused_and_never_run(tmp_path: Path):
    crafted, marker = tmp_path / "crafted.pt", tmp_path / "code_ran"
    code_running_checkpoint(crafted, marker, network={})
    workflow = _workflow(
        [CONFIGS / "train.yaml"],
        phantom_dir=str(tmp_path / "phantoms"),
        output_dir=str(tmp_path / "out"),
        resume=str(crafted),
    )
    with pytest.raises(Exception) as excinfo:
        workflow.initialize()
        workflow.run()
    assert not marker.exists()
    message = "".join(str(e) for e in _chain(excinfo.value))
    assert f"{crafted}: refused" in message
    assert unsafe_advice(message) == []  # torch's advice would have the user run the refused code


class _NaNVoxelFrom:
    """``prepare_batch`` that sets one voxel of every image to NaN from the ``first``-th batch on."""

    def __init__(self, first: int) -> None:
        self.first, self.calls = first, 0

    def __call__(self, batchdata, *args, **kwargs):
        self.calls += 1
        if self.calls >= self.first:
            batchdata["image"].view(-1)[0] = float("nan")
        return default_prepare_batch(batchdata, *args, **kwargs)


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path: Path):
    out = tmp_path / "out"
    workflow = _workflow(
        [CONFIGS / "train.yaml"],
        phantom_dir=str(tmp_path / "phantoms"),
        output_dir=str(out),
        **{"train#trainer#prepare_batch": _NaNVoxelFrom(3)},  # 2 iterations per epoch: epoch 2's first
    )
    with pytest.raises(Exception) as excinfo:
        workflow.initialize()
        workflow.run()
    errors = [e for e in _chain(excinfo.value) if isinstance(e, FloatingPointError)]
    assert errors and "epoch 2, iteration 3" in str(errors[0])
    checkpoint = torch.load(out / "models" / "checkpoint.pt", weights_only=True)
    assert checkpoint["trainer"]["iteration"] == 2
    for weights in (checkpoint["network"], torch.load(out / "models" / "model.pt", weights_only=True)):
        assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())
