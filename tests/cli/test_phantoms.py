"""``brats-cggm-phantoms OUT_DIR``: the cases it writes, refusals, bad arguments."""

from __future__ import annotations

from pathlib import Path

import pytest

from brats_cggm.cli.phantoms import main


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    assert main([str(out), "--n", "2", "--shape", "24", "24", "24", "--seed", "4"]) == 0
    printed = capsys.readouterr().out
    assert "BraTS2021_00001" in printed and str(out) in printed
    assert (out / "BraTS2021_00001" / "BraTS2021_00001_seg.nii.gz").is_file()
    # Existing cases: refused without --overwrite, replaced with it.
    assert main([str(out), "--n", "1", "--shape", "24", "24", "24"]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main([str(out), "--n", "1", "--shape", "24", "24", "24", "--overwrite"]) == 0


@pytest.mark.parametrize(
    "args",
    [
        ["--n", "0"],
        ["--shape", "16", "32", "32"],
        ["--shape", "-32", "32", "32"],
        ["--shape", "32", "32"],
        ["--n", "two"],
    ],
)
def test_cli_bad_arguments(tmp_path: Path, args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "x"), *args]) == 2
    assert "error" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
