"""Checks of user NIfTI files: each bad file gives a one-line InputFileError naming the file and the problem."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from brats_cggm.brats.data.nifti_checks import (
    InputFileError,
    check_affine,
    check_same_grid,
    is_nifti_name,
    load_checked_volume,
    strip_nifti_extension,
)

SHAPE = (12, 10, 8)


def _save(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(path))
    return path


def _volume(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(1, 100, SHAPE).astype(np.float32)


def _assert_one_line(exc: pytest.ExceptionInfo, path: Path, problem: str) -> None:
    message = str(exc.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert problem in message


def test_good_volume_loads_scaled(tmp_path: Path):
    data = _volume()
    image = nib.Nifti1Image(data, np.eye(4), dtype=np.int16)
    nib.save(image, str(tmp_path / "a.nii.gz"))
    _, loaded = load_checked_volume(tmp_path / "a.nii.gz")
    assert loaded.shape == SHAPE
    np.testing.assert_allclose(loaded, data, atol=0.01)  # int16 with slope: scaled back


def test_gz_volume_is_held_in_memory(tmp_path: Path):
    """The voxels of a .gz file are decompressed once: the returned image reads them without the file."""
    path = tmp_path / "a.nii.gz"
    nib.save(nib.Nifti1Image(_volume(), np.eye(4), dtype=np.int16), str(path))
    image, loaded = load_checked_volume(path)
    path.unlink()
    np.testing.assert_array_equal(np.asanyarray(image.dataobj), loaded)


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda p: p, "does not exist"),
        (lambda p: (p.write_text("hello"), p)[1], "truncated or corrupt gzip data"),
        (lambda p: (p.with_suffix("").write_text("hello"), p.with_suffix(""))[1], "is not a readable NIfTI file"),
        (lambda p: p.parent, "is a directory"),
    ],
    ids=["missing", "garbage_gz", "garbage_nii", "directory"],
)
def test_unreadable_files(tmp_path: Path, make, problem: str):
    path = make(tmp_path / "scan.nii.gz")
    with pytest.raises(InputFileError) as exc:
        load_checked_volume(path)
    _assert_one_line(exc, path, problem)


def test_not_a_nifti_name(tmp_path: Path):
    path = tmp_path / "scan.png"
    path.write_bytes(b"\x89PNG")
    with pytest.raises(InputFileError) as exc:
        load_checked_volume(path)
    _assert_one_line(exc, path, "is not a NIfTI file")


def test_truncated_gzip(tmp_path: Path):
    path = _save(tmp_path / "t.nii.gz", _volume())
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputFileError) as exc:
        load_checked_volume(path)
    _assert_one_line(exc, path, "truncated or corrupt")


def _corrupt(path: Path, where: str) -> Path:
    raw = bytearray(path.read_bytes())
    if where == "crc":
        raw[-8:-4] = bytes(255 - b for b in raw[-8:-4])  # the data decompress, the check fails
    else:
        middle = len(raw) // 2
        raw[middle : middle + 16] = bytes(255 - b for b in raw[middle : middle + 16])
    path.write_bytes(bytes(raw))
    return path


@pytest.mark.parametrize("where", ["crc", "stream"])
def test_corrupt_gzip(tmp_path: Path, where: str):
    path = _corrupt(_save(tmp_path / "c.nii.gz", _volume()), where)
    with pytest.raises(InputFileError) as exc:
        load_checked_volume(path)
    _assert_one_line(exc, path, "truncated or corrupt")


def test_uncompressed_data_cut_short(tmp_path: Path):
    path = _save(tmp_path / "u.nii", _volume())
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(InputFileError) as exc:
        load_checked_volume(path)
    assert str(exc.value).startswith(f"{path}: ")


def test_dimensionality(tmp_path: Path):
    four_d = _save(tmp_path / "4d.nii.gz", np.stack([_volume(), _volume(1)], axis=-1))
    with pytest.raises(InputFileError) as exc:
        load_checked_volume(four_d, ndim=3)
    _assert_one_line(exc, four_d, "4-D, expected a 3-D volume")
    _, data = load_checked_volume(four_d, ndim=4, min_channels=2)
    assert data.shape == (*SHAPE, 2)
    with pytest.raises(InputFileError, match="at least 4 channels"):
        load_checked_volume(four_d, ndim=4, min_channels=4)
    three_d = _save(tmp_path / "3d.nii.gz", _volume())
    with pytest.raises(InputFileError, match="expected a 4-D"):
        load_checked_volume(three_d, ndim=4)
    # one volume with a trailing axis of length 1 is a 3-D volume (MONAI's readers drop the axis too)
    _, data = load_checked_volume(_save(tmp_path / "x1.nii.gz", _volume()[..., None]))
    assert data.shape == SHAPE


def test_nan_and_empty_volumes(tmp_path: Path):
    data = _volume()
    data[3, 3, 3] = np.nan
    nan = _save(tmp_path / "nan.nii.gz", data)
    with pytest.raises(InputFileError) as exc:
        load_checked_volume(nan)
    _assert_one_line(exc, nan, "NaN or infinite")
    zero = _save(tmp_path / "zero.nii.gz", np.zeros(SHAPE, np.float32))
    with pytest.raises(InputFileError) as exc:
        load_checked_volume(zero)
    _assert_one_line(exc, zero, "every voxel is 0")
    load_checked_volume(zero, check_values=False)  # label maps may be empty
    stack = _save(tmp_path / "stack.nii.gz", np.stack([_volume(), np.zeros(SHAPE, np.float32)], axis=-1))
    with pytest.raises(InputFileError, match=r"channel 1"):
        load_checked_volume(stack, ndim=4)


def test_same_grid(tmp_path: Path):
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    ref = _save(tmp_path / "ref.nii.gz", _volume(), affine)
    close = affine.copy()
    close[0, 3] += 1e-4
    far = affine.copy()
    far[0, 3] += 0.5
    ok = _save(tmp_path / "ok.nii.gz", _volume(), close)
    moved = _save(tmp_path / "moved.nii.gz", _volume(), far)
    other_shape = _save(tmp_path / "shape.nii.gz", np.ones((12, 10, 9), np.float32), affine)
    images = {p: nib.load(str(p)) for p in (ref, ok, moved, other_shape)}

    check_same_grid([(ref, images[ref]), (ok, images[ok])])
    with pytest.raises(InputFileError) as exc:
        check_same_grid([(ref, images[ref]), (ok, images[ok]), (moved, images[moved])])
    _assert_one_line(exc, moved, "affine differs")
    assert str(ref) in str(exc.value)
    check_same_grid([(ref, images[ref]), (moved, images[moved])], tolerance=1.0)
    with pytest.raises(InputFileError) as exc:
        check_same_grid([(ref, images[ref]), (other_shape, images[other_shape])])
    _assert_one_line(exc, other_shape, "spatial shape (12, 10, 9) differs from (12, 10, 8)")


def test_names():
    assert is_nifti_name("a.nii") and is_nifti_name("a.nii.gz") and not is_nifti_name("a.nii.gz.bak")
    assert strip_nifti_extension("BraTS_001_t1.nii.gz") == "BraTS_001_t1"
    assert strip_nifti_extension("x.nii") == "x" and strip_nifti_extension("x.mha") == "x.mha"


def test_gzip_module_sanity(tmp_path: Path):
    """The corrupt-file fixture above really is a gzip stream whose check fails (not some other error)."""
    path = _corrupt(_save(tmp_path / "c.nii.gz", _volume()), "crc")
    with pytest.raises(gzip.BadGzipFile, match="CRC"):
        gzip.decompress(path.read_bytes())


def _nan_affine() -> np.ndarray:
    affine = np.eye(4)
    affine[0, 3] = np.nan
    return affine


@pytest.mark.parametrize(
    ("affine", "problem"),
    [
        (_nan_affine(), "has NaN or infinite entries"),
        (np.diag([1.0, 1.0, 0.0, 1.0]), "is singular"),
    ],
    ids=["nan", "singular"],
)
def test_unusable_affine(tmp_path: Path, affine: np.ndarray, problem: str):
    # sform only: nibabel cannot derive a qform from a singular matrix
    image = nib.Nifti1Image(_volume(), None)
    image.set_sform(affine, code=1)
    path = tmp_path / "a.nii.gz"
    nib.save(image, str(path))
    with pytest.raises(InputFileError) as exc:
        load_checked_volume(path)
    _assert_one_line(exc, path, problem)
    good = _save(tmp_path / "good.nii.gz", _volume())
    images = [(good, nib.load(str(good))), (path, nib.load(str(path)))]
    # NaN compares as "not larger than the tolerance": it must not pass as the same grid
    with pytest.raises(InputFileError) as exc:
        check_same_grid(images)
    _assert_one_line(exc, path, problem)
    with pytest.raises(InputFileError, match=problem):
        check_affine(path, affine)
    check_affine(path, np.diag([0.1, 0.1, 0.1, 1.0]))  # small voxels are not singular


def test_evaluate_cli_rejects_a_nan_affine(tmp_path: Path, capsys: pytest.CaptureFixture):
    from brats_cggm.cli.evaluate import main as evaluate_main

    labels = np.zeros(SHAPE, np.uint8)
    labels[4:8, 4:8, 2:6] = 2
    (tmp_path / "pred").mkdir()
    (tmp_path / "ref").mkdir()
    pred = _save(tmp_path / "pred" / "case.nii.gz", labels, _nan_affine())
    _save(tmp_path / "ref" / "case.nii.gz", labels)
    assert evaluate_main([str(tmp_path / "pred"), str(tmp_path / "ref")]) == 1
    err = capsys.readouterr().err
    assert f"{pred}: affine (voxel-to-world matrix) has NaN or infinite entries" in err
