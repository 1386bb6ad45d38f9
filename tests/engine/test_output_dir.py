"""``prepare_output_dir``: a previous run is refused, resumed or (with overwrite) removed; other files stay."""

from __future__ import annotations

from pathlib import Path

import pytest

from brats_cggm.engine.output_dir import RunExistsError, find_run_files, prepare_output_dir


def _previous_run(root: Path) -> Path:
    (root / "models").mkdir(parents=True)
    for name in ("models/checkpoint.pt", "models/model.pt", "metrics.json", "events.out.tfevents.1.host"):
        (root / name).write_bytes(b"x")
    (root / "models" / ".checkpoint.pt.0123456789ab.tmp").touch()
    return root


def test_missing_empty_or_foreign_folders_are_fine(tmp_path: Path):
    assert prepare_output_dir(tmp_path / "new") == tmp_path / "new"
    (tmp_path / "empty").mkdir()
    prepare_output_dir(tmp_path / "empty")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "README.txt").write_text("mine")
    prepare_output_dir(tmp_path / "notes")


def test_a_previous_run_is_refused_resumed_or_overwritten(tmp_path: Path):
    out = _previous_run(tmp_path / "out")
    (out / "README.txt").write_text("mine")
    with pytest.raises(RunExistsError, match=r"--resume true.*--output_dir.*--overwrite true"):
        prepare_output_dir(out)
    with pytest.raises(RunExistsError):
        prepare_output_dir(out, resume="false", overwrite="false")
    assert len(find_run_files(out)) == 5
    for resume in (True, "true", str(out / "models" / "checkpoint.pt")):
        prepare_output_dir(out, resume=resume)
        assert len(find_run_files(out)) == 5
    prepare_output_dir(out, overwrite="true")
    assert find_run_files(out) == [] and (out / "README.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="overwrite='maybe'"):
        prepare_output_dir(out, overwrite="maybe")
