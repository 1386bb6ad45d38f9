"""``brats-cggm-diagnose``: a real tiny run's report, and the command's errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from brats_cggm.cli.diagnose import main, unimodal_runs


def test_report_of_a_tiny_run(tiny_run_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "diag"
    argv = [str(tiny_run_dir), "--output-dir", str(out), "--device", "cpu"]  # the run's data set and split: recorded
    assert main([*argv, "--weights", "last"]) == 0
    printed = capsys.readouterr().out
    assert "Mean Dice over the 15 non-empty subsets" in printed and "wrote diagnostics.json" in printed
    document = json.loads((out / "diagnostics.json").read_text())
    assert len(document["summary"]["subset_dice"]) == 15 and "encoder_gap" not in document["summary"]
    assert document["runs"][0]["weights"] == "last" and "## Lesion-wise Dice" in printed
    last = tiny_run_dir / "models" / "checkpoint.pt"
    assert document["runs"][0]["weights_file"] == str(last) and f"{tiny_run_dir}`: last (`{last}`)" in printed
    assert (out / "shapley.png").stat().st_size > 0 and (out / "subset_dice.png").is_file()
    assert document["runs"][0]["absent"] == "mask" and document["summary"]["absent"] == "mask"  # the default
    assert "an absent modality: `mask`, the modality's encoder does not run" in printed
    # an existing report is refused before any work, and kept
    before = (out / "diagnostics.json").read_text()
    assert main(argv) == 1
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert (out / "diagnostics.json").read_text() == before


def test_zero_input_is_recorded(tiny_run_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "diag"
    argv = [str(tiny_run_dir), "--output-dir", str(out), "--device", "cpu", "--weights", "last", "--no-plots"]
    assert main([*argv, "--absent", "zero-input"]) == 0
    document = json.loads((out / "diagnostics.json").read_text())
    assert document["runs"][0]["absent"] == "zero-input" and document["summary"]["absent"] == "zero-input"
    assert "an absent modality: `zero-input`, the modality's image is replaced by zeros" in capsys.readouterr().out
    assert main([*argv, "--overwrite", "--absent", "zeros"]) == 2


def test_best_weights_without_model_pt_are_refused_before_any_work(tiny_run_dir: Path, tmp_path: Path, capsys):
    run_dir = Path(shutil.copytree(tiny_run_dir, tmp_path / "run"))
    (run_dir / "models" / "model.pt").unlink()
    out = tmp_path / "diag"
    assert main([str(run_dir), "--output-dir", str(out), "--device", "cpu", "--weights", "best"]) == 1
    err = capsys.readouterr().err
    assert f"error: {run_dir / 'models' / 'model.pt'} does not exist" in err and "use --weights last" in err
    assert not out.exists()
    # a unimodal run is checked too, before any multimodal run is diagnosed
    argv = [str(tiny_run_dir), "--unimodal", f"flair={run_dir}", "--output-dir", str(out), "--device", "cpu"]
    assert main(argv) == 1
    assert "model.pt does not exist" in capsys.readouterr().err and not out.exists()


def test_unimodal_pairing() -> None:
    paired = unimodal_runs(["flair=a0", "flair=a1", "t2=b"], 2)
    assert paired == [{"flair": Path("a0"), "t2": Path("b")}, {"flair": Path("a1"), "t2": Path("b")}]
    with pytest.raises(ValueError, match="expected M=RUN_DIR"):
        unimodal_runs(["flair"], 1)
    with pytest.raises(ValueError, match="2 runs for 3 multimodal runs"):
        unimodal_runs(["flair=a", "flair=b"], 3)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--seeds", "0", "1"], "2 seeds for 1 runs"),
        (["--unimodal", "flair"], "expected M=RUN_DIR"),
        (["--val-fraction", "1.5"], "--val-fraction must be between 0 and 1"),
        (["--probe-steps", "0"], "--probe-steps"),
        (["--weights", "final"], "invalid choice: 'final'"),
    ],
)
def test_bad_arguments(tmp_path: Path, extra: list[str], message: str, capsys) -> None:
    argv = [str(tmp_path / "run"), "--dataset-dir", str(tmp_path), "--output-dir", str(tmp_path / "out"), *extra]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_missing_run_folder(tmp_path: Path, phantom_dataset: Path, capsys) -> None:
    argv = [str(tmp_path / "nope"), "--dataset-dir", str(phantom_dataset), "--output-dir", str(tmp_path / "out")]
    assert main([*argv, "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert f"run folder {tmp_path / 'nope'} does not exist" in err
    assert not (tmp_path / "out").exists()
