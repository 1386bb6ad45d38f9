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


def test_cli_mni152(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import nibabel as nib

    from brats_cggm.brats.phantoms.anatomical import brats_grid_affine

    out = tmp_path / "anatomical"
    assert main([str(out), "--anatomy", "mni152", "--n", "1", "--spacing", "8", "--seed", "3"]) == 0
    assert "on MNI152 anatomy, shape (30, 30, 20) at 8.0 mm" in capsys.readouterr().out
    image = nib.load(out / "BraTS2021_00000" / "BraTS2021_00000_t1ce.nii.gz")
    assert image.shape == (30, 30, 20)
    assert abs(image.affine - brats_grid_affine(8)).max() < 1e-6
    assert main([str(out), "--anatomy", "mni152", "--n", "1", "--spacing", "8"]) == 1
    assert "already exists" in capsys.readouterr().err
    # The default variant is what --anatomy mni152 writes; the positive control differs in its images only.
    default = nib.load(out / "BraTS2021_00000" / "BraTS2021_00000_t2.nii.gz").get_fdata()
    control_dir = tmp_path / "control"
    args = [str(control_dir), "--anatomy", "mni152", "--n", "1", "--spacing", "8", "--seed", "3"]
    assert main([*args, "--variant", "t2-flair-mismatch"]) == 0
    assert "at 8.0 mm, variant t2-flair-mismatch" in capsys.readouterr().out
    control = nib.load(control_dir / "BraTS2021_00000" / "BraTS2021_00000_t2.nii.gz").get_fdata()
    assert (control != default).any()
    for key in ("seg", "flair"):
        name = f"BraTS2021_00000_{key}.nii.gz"
        assert (nib.load(control_dir / "BraTS2021_00000" / name).get_fdata() == 0).sum() == (
            nib.load(out / "BraTS2021_00000" / name).get_fdata() == 0
        ).sum()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--spacing", "2"], "--spacing is for --anatomy mni152"),
        (["--anatomy", "mni152", "--shape", "32", "32", "32"], "--shape is for --anatomy geometric"),
        (["--anatomy", "mni152", "--spacing", "0.5"], "between 1 and 8 mm"),
        (["--anatomy", "mni152", "--spacing", "2", "2"], "one or three voxel sizes"),
        (["--anatomy", "ellipsoid"], "invalid choice"),
        (["--variant", "t2-flair-mismatch"], "--variant is for --anatomy mni152"),
        (["--anatomy", "mni152", "--variant", "mismatch"], "invalid choice"),
    ],
)
def test_cli_anatomy_bad_arguments(
    tmp_path: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(tmp_path / "x"), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
