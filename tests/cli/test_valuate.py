"""``brats-cggm-valuate``: reports on phantom cases, errors, old flag spellings."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from brats_cggm.brats.analysis.valuation import REPORT_FILES
from brats_cggm.cli.valuate import main

MODALITIES = ("flair", "t1ce", "t1", "t2")


def test_cli_writes_reports(tiny_run_dir, phantom_dataset, tmp_path):
    out = tmp_path / "valuation"
    checkpoint = tiny_run_dir / "models" / "checkpoint.pt"  # a training checkpoint ("network" entry)
    argv = ["--bundle", str(tiny_run_dir), "--checkpoint", str(checkpoint), "--dataset-dir", str(phantom_dataset)]
    assert main([*argv, "--output-dir", str(out), "--device", "cpu", "--max-cases", "2"]) == 0
    with open(out / "shapley_per_case.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 4 and set(rows[0]) == {"case_id", "modality", "TC", "WT", "ET", "mean"}
    with open(out / "subset_dice_per_case.csv") as f:
        subset_rows = list(csv.DictReader(f))
    assert len(subset_rows) == 2 * 16 and len({r["subset"] for r in subset_rows}) == 16
    summary = json.loads((out / "shapley.json").read_text())
    assert summary["num_cases"] == 2 and summary["modalities"] == list(MODALITIES)
    full, none = summary["subset_dice"]["flair+t1ce+t1+t2"], summary["subset_dice"]["none"]
    for region in ("TC", "WT", "ET", "mean"):  # efficiency: Σ φ = v(all) − v(∅), per region
        total = sum(summary["shapley"][m][region] for m in MODALITIES)
        assert total == pytest.approx(full[region] - none[region], abs=1e-5)
        assert 0.0 <= full[region] <= 1.0
    per_case = {(r["case_id"], r["modality"]): float(r["TC"]) for r in rows}  # the JSON mean is the cases' mean
    for m in MODALITIES:
        values = [v for (case, mod), v in per_case.items() if mod == m]
        assert summary["shapley"][m]["TC"] == pytest.approx(sum(values) / 2, abs=1e-5)
    table = (out / "shapley.md").read_text()
    assert all(f"| {m} |" in table for m in MODALITIES) and "φ TC" in table
    # the default definition of an absent modality, recorded; nothing predicted without any modality
    assert summary["absent"] == "mask" and "absent = mask: the modality's encoder does not run" in table
    assert "Dice, none (nothing predicted)" in table


def test_cli_zero_input_is_recorded(tiny_run_dir, phantom_dataset, tmp_path, capsys):
    out = tmp_path / "valuation"
    argv = ["--bundle", str(tiny_run_dir), "--dataset-dir", str(phantom_dataset), "--output-dir", str(out)]
    assert main([*argv, "--device", "cpu", "--max-cases", "1", "--absent", "zero-input"]) == 0
    summary = json.loads((out / "shapley.json").read_text())
    assert summary["absent"] == "zero-input" and "replaced by zeros" in summary["absent_definition"]
    assert "absent = zero-input: the modality's image is replaced by zeros" in (out / "shapley.md").read_text()
    assert "absent = zero-input" in capsys.readouterr().out
    assert main([*argv, "--overwrite", "--absent", "zeros"]) == 2
    assert "invalid choice: 'zeros'" in capsys.readouterr().err


def test_cli_refuses_to_overwrite_and_reports_bad_input(tiny_run_dir, phantom_dataset, tmp_path, capsys):
    out = tmp_path / "v"
    args = ["--bundle", str(tiny_run_dir), "--dataset-dir", str(phantom_dataset), "--output-dir", str(out)]
    assert main([*args, "--device", "cpu", "--case-ids", "BraTS2021_00001"]) == 0  # default models/model.pt
    assert json.loads((out / "shapley.json").read_text())["num_cases"] == 1
    before = {name: (out / name).read_bytes() for name in REPORT_FILES}
    assert main([*args, "--device", "cpu", "--max-cases", "1"]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert {name: (out / name).read_bytes() for name in REPORT_FILES} == before  # untouched

    empty = tmp_path / "empty"
    missing = tmp_path / "missing.pt"
    assert main([*args[:4], "--output-dir", str(empty), "--checkpoint", str(missing)]) == 1
    assert str(missing) in capsys.readouterr().err
    assert not empty.exists() or not any(empty.iterdir())  # nothing half-written
    assert main(["--bundle", str(tiny_run_dir)]) == 2


def test_console_script_help():
    result = subprocess.run(
        [sys.executable, "-m", "brats_cggm.cli.valuate", "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0 and "--dataset-dir" in result.stdout and "Shapley" in result.stdout
    assert "--absent {mask,zero-input}" in result.stdout


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        (["--overlap", "1.5"], "must be in [0, 1)"),
        (["--overlap", "inf"], "finite"),
        (["--sw-batch-size", "0"], "must be at least 1"),
        (["--roi", "32", "-32", "32"], "must be at least 1"),
        (["--max-cases", "0"], "must be at least 1"),
    ],
)
def test_bad_numbers_are_usage_errors(flag: list[str], message: str, tiny_run_dir, tmp_path, capsys):
    argv = ["--bundle", str(tiny_run_dir), "--dataset-dir", str(tmp_path), "--output-dir", str(tmp_path / "v")]
    assert main([*argv, *flag]) == 2
    err = capsys.readouterr().err
    assert flag[0] in err and message in err
    assert not (tmp_path / "v").exists()


def test_old_flag_spellings_are_refused(tiny_run_dir, phantom_dataset, tmp_path, capsys):
    for old in ("--dataset_dir", "--output", "--max_cases", "--case_ids", "--sw_batch_size"):
        argv = ["--bundle", str(tiny_run_dir), "--dataset-dir", str(phantom_dataset), "--output-dir", str(tmp_path)]
        assert main([*argv, old, "1"]) == 2
        assert f"unrecognized arguments: {old}" in capsys.readouterr().err
    help_text = subprocess.run(
        [sys.executable, "-m", "brats_cggm.cli.valuate", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "--dataset_dir" not in help_text and "--output " not in help_text
