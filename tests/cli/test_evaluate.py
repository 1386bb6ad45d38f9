"""``brats-cggm-evaluate PRED_DIR REF_DIR``: the files it writes, refusals, unwritable outputs, usage errors."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

from brats_cggm.brats.evaluation import HD95_EMPTY_MM
from brats_cggm.cli.evaluate import main
from tests.helpers.segmentation_folders import SHAPE, by_hand, save_labels, write_folders


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    """See :func:`tests.helpers.segmentation_folders.write_folders`."""
    return write_folders(tmp_path)


def test_cli_writes_csv_and_summary(folders: tuple[Path, Path], tmp_path: Path, capsys):
    out = tmp_path / "results"
    assert main([str(folders[0]), str(folders[1]), "--output-dir", str(out)]) == 1  # D and E are unpaired
    captured = capsys.readouterr()
    assert "3 of 5 cases evaluated" in captured.out
    assert "no prediction: E" in captured.err and "no reference: D" in captured.err

    with (out / "evaluation.csv").open() as f:
        rows = {r["case_id"]: r for r in csv.DictReader(f)}
    assert rows["E"]["status"] == "missing_prediction" and rows["E"]["dice_wt"] == ""
    assert float(rows["B"]["hd95_wt"]) == pytest.approx(9.5, abs=1e-4)
    assert float(rows["C"]["hd95_et"]) == pytest.approx(HD95_EMPTY_MM)

    summary = json.loads((out / "evaluation_summary.json").read_text())
    assert summary["n_cases"] == 5 and summary["n_evaluated"] == 3
    assert summary["missing_predictions"] == ["E"] and summary["missing_references"] == ["D"]
    expected = by_hand()
    for name in ("dice_et", "dice_wt", "hd95_et", "hd95_wt"):
        values = np.array([expected[c][name] for c in "ABC"])
        stats = summary["metrics"][name]
        assert stats["n"] == 3
        assert stats["mean"] == pytest.approx(values.mean(), abs=1e-4)
        assert stats["std"] == pytest.approx(values.std(), abs=1e-4)
        assert stats["median"] == pytest.approx(np.median(values), abs=1e-4)

    # existing results are not overwritten without --overwrite
    before = (out / "evaluation.csv").read_text()
    assert main([str(folders[0]), str(folders[1]), "--output-dir", str(out)]) == 1
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert (out / "evaluation.csv").read_text() == before
    assert main([str(folders[0]), str(folders[1]), "--output-dir", str(out), "--overwrite"]) == 1


def test_complete_evaluation_exits_0(tmp_path: Path, capsys):
    labels = np.zeros(SHAPE, np.uint8)
    labels[4:6, 4:6, 4:6] = 3  # BraTS 2023 ET
    save_labels(tmp_path / "pred" / "X.nii.gz", labels)
    save_labels(tmp_path / "ref" / "X.nii.gz", labels)
    argv = [str(tmp_path / "pred"), str(tmp_path / "ref"), "--labels", "brats2023"]
    assert main(argv) == 0
    summary = json.loads((tmp_path / "pred" / "evaluation_summary.json").read_text())
    assert summary["metrics"]["dice_et"]["mean"] == 1.0 and summary["label_convention"] == "brats2023"
    capsys.readouterr()
    # the results in PRED_DIR are not read as predictions on a second run
    assert main([*argv, "--overwrite"]) == 0


def test_cli_errors_and_help(tmp_path: Path, capsys):
    assert main([str(tmp_path / "nowhere"), str(tmp_path)]) == 1
    assert f"error: {tmp_path / 'nowhere'}: prediction folder does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "PRED_DIR" in capsys.readouterr().out.upper()
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path)])
    assert exc.value.code == 2


def _refuse_to_evaluate(*args, **kwargs):
    raise AssertionError("evaluated although the results could not be written")


@pytest.mark.parametrize("where", ["existing_file", "under_a_file"])
def test_unwritable_output_dir_fails_before_evaluating(
    folders: tuple[Path, Path], tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch, where: str
):
    import brats_cggm.cli.evaluate as evaluation

    monkeypatch.setattr(evaluation, "evaluate_folders", _refuse_to_evaluate)
    blocker = tmp_path / "results"
    blocker.write_text("a file, not a folder")
    out = blocker if where == "existing_file" else blocker / "sub"
    pred, ref = folders
    assert main([str(pred), str(ref), "--output-dir", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: --output-dir {out}: ") and "not a folder" in err
    assert blocker.read_text() == "a file, not a folder"


def test_output_dir_without_write_permission(folders: tuple[Path, Path], tmp_path: Path, capsys, monkeypatch):
    """A folder the user may not write to (os.access says so; root passes permission bits, so it is simulated)."""
    import brats_cggm.cli.evaluate as evaluation

    out = tmp_path / "locked"
    out.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: Path(path) != out and real_access(path, mode, **kw))
    monkeypatch.setattr(evaluation, "evaluate_folders", _refuse_to_evaluate)
    pred, ref = folders
    assert main([str(pred), str(ref), "--output-dir", str(out / "new")]) == 1
    assert (
        capsys.readouterr().err == f"error: --output-dir {out / 'new'}: not writable (it would be created in {out})\n"
    )
    assert not any(out.iterdir())


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores permission bits")
def test_read_only_output_dir(folders: tuple[Path, Path], tmp_path: Path, capsys):
    out = tmp_path / "read_only"
    out.mkdir()
    out.chmod(0o500)
    try:
        pred, ref = folders
        assert main([str(pred), str(ref), "--output-dir", str(out)]) == 1
        assert capsys.readouterr().err == f"error: --output-dir {out}: not writable\n"
    finally:
        out.chmod(0o700)


@pytest.mark.parametrize("tolerance", ["-1", "nan", "x"])
def test_bad_affine_tolerance_is_a_usage_error(folders: tuple[Path, Path], tolerance: str, capsys):
    pred, ref = folders
    with pytest.raises(SystemExit) as exc:
        main([str(pred), str(ref), f"--affine-tolerance={tolerance}"])
    assert exc.value.code == 2 and "--affine-tolerance" in capsys.readouterr().err
