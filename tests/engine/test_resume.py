"""Resumption in one process: a killed run continues exactly; a damaged checkpoint falls back; settings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from brats_cggm.engine.checkpoint import CheckpointLoadError, previous_checkpoint_path
from brats_cggm.engine.resume import resolve_resume_path, resume_from_checkpoint
from tests.helpers.tiny_run import build, kill_at

SAMPLES = 4  # 2 iterations per epoch, 3 epochs


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict:
    run = build(tmp_path_factory.mktemp("uninterrupted"), samples=SAMPLES)
    run.trainer.run()
    return run.result()


def _resume(folder: Path, resume=True, modality_dropout: float = 0.0):
    run = build(folder, samples=SAMPLES, modality_dropout=modality_dropout)
    torch.manual_seed(99)  # the resumed run must not depend on the seeds it starts with
    np.random.seed(99)  # noqa: NPY002
    used = resume_from_checkpoint(resume, run.handlers, run.trainer)
    return run, used


def _assert_same(result: dict, uninterrupted: dict, first_iteration: int) -> None:
    assert [s["iteration"] for s in result["log"]] == list(range(first_iteration, 7))
    assert result["log"] == uninterrupted["log"][first_iteration - 1 :]
    for name, value in uninterrupted["params"].items():
        torch.testing.assert_close(result["params"][name], value, rtol=0, atol=0, msg=name)


def test_a_killed_run_resumes_where_its_checkpoint_left_off_and_ends_as_the_uninterrupted_one(
    tmp_path: Path, uninterrupted: dict
):
    kill_at(build(tmp_path, samples=SAMPLES), 3)  # in epoch 2: the checkpoint is epoch 1's
    run, used = _resume(tmp_path)
    assert used == tmp_path / "checkpoint.pt"
    assert (run.trainer.state.epoch, run.trainer.state.iteration) == (1, 2)
    run.trainer.run()
    _assert_same(run.result(), uninterrupted, first_iteration=3)


def test_a_run_with_missing_modality_training_resumes_exactly(tmp_path: Path):
    reference = build(tmp_path / "reference", samples=SAMPLES, modality_dropout=0.5)
    reference.trainer.run()
    uninterrupted = reference.result()
    dropped = [entry["dropped"] for entry in uninterrupted["log"]]
    assert any(
        value > 0 for entry in dropped for key, value in entry.items() if key.startswith("modality_dropout/step")
    )
    kill_at(build(tmp_path, samples=SAMPLES, modality_dropout=0.5), 3)
    run, _ = _resume(tmp_path, modality_dropout=0.5)
    run.trainer.run()
    # the drawn masks, the dropped counts (modality_dropout/run/*) and every weight continue exactly
    _assert_same(run.result(), uninterrupted, first_iteration=3)


def test_a_truncated_checkpoint_is_detected_and_training_resumes_from_the_previous_one(
    tmp_path: Path, uninterrupted: dict
):
    kill_at(build(tmp_path, samples=SAMPLES), 5)  # checkpoints of epoch 2 (newest) and epoch 1 (previous)
    newest = tmp_path / "checkpoint.pt"
    newest.write_bytes(newest.read_bytes()[:1000])  # cut short, as by a crash in a non-atomic copy
    with pytest.warns(UserWarning, match="using the previous one"):
        run, used = _resume(tmp_path)
    assert used == previous_checkpoint_path(newest)
    assert run.trainer.state.iteration == 2
    run.trainer.run()
    _assert_same(run.result(), uninterrupted, first_iteration=3)


def test_resume_settings(tmp_path: Path):
    default = tmp_path / "checkpoint.pt"
    for off in (False, None, "false", "no", ""):
        assert resolve_resume_path(off, default) == (None, False)
    for auto in (True, "true", "True", "auto"):
        assert resolve_resume_path(auto, default) == (default, False)
    assert resolve_resume_path(str(tmp_path / "x.pt"), default) == (tmp_path / "x.pt", True)

    run = build(tmp_path, samples=SAMPLES)
    assert resume_from_checkpoint(True, run.handlers, run.trainer) is None  # nothing yet: starts afresh
    assert run.trainer.state.iteration == 0
    with pytest.raises(FileNotFoundError, match=r"missing\.pt"):
        resume_from_checkpoint(str(tmp_path / "missing.pt"), run.handlers, run.trainer)
    with pytest.raises(ValueError, match="TrainingCheckpointSaver"):
        resume_from_checkpoint(True, run.handlers[:1], run.trainer)
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointLoadError, match=r"junk\.pt"):
        resume_from_checkpoint(str(tmp_path / "junk.pt"), run.handlers, run.trainer)


def test_a_finished_run_resumes_only_with_more_epochs(tmp_path: Path):
    build(tmp_path, samples=SAMPLES, epochs=1).trainer.run()
    run = build(tmp_path, samples=SAMPLES, epochs=1)
    with pytest.raises(ValueError, match="raise max_epochs"):
        resume_from_checkpoint(True, run.handlers, run.trainer)
    run = build(tmp_path, samples=SAMPLES, epochs=2)
    resume_from_checkpoint(True, run.handlers, run.trainer)
    run.trainer.run()
    assert [s["iteration"] for s in run.log] == [3, 4]
