"""DICOM series folders: geometry (LPS to RAS), voxels, and one-line errors for folders that are not one series."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from brats_cggm.brats.data.dicom import DicomSeriesError, read_dicom_series, sitk_affine
from brats_cggm.brats.data.nifti_checks import (
    InputFileError,
    check_same_grid,
    load_checked_volume,
    load_nifti,
    read_checked_header,
)
from tests.helpers.dicom_series import write_dicom_series
from tests.helpers.inference_cases import HEADERS

SHAPE = (12, 10, 8)


def _volume(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(1, 500, SHAPE).astype(np.float32)


def test_sitk_affine_flips_x_and_y():
    # identity direction in LPS: +i goes to the patient's left, which is -x in RAS
    affine = sitk_affine((10.0, -20.0, 5.0), (0.5, 1.0, 2.0), np.eye(3).flatten())
    expected = np.array([[-0.5, 0, 0, -10.0], [0, -1.0, 0, 20.0], [0, 0, 2.0, 5.0], [0, 0, 0, 1]])
    np.testing.assert_array_equal(affine, expected)


@pytest.mark.parametrize("header", ["ras", "lps_anisotropic_qform_only", "oblique"])
def test_series_reads_back_on_its_geometry(header: str, tmp_path: Path):
    affine = HEADERS[header][0]
    volume = _volume()
    folder = write_dicom_series(volume, affine, tmp_path / "series")
    image = read_dicom_series(folder)
    assert image.shape == SHAPE
    np.testing.assert_allclose(image.affine, affine, atol=1e-5)
    for getter in (image.header.get_qform, image.header.get_sform):
        matrix, code = getter(coded=True)
        assert int(code) == 1
        np.testing.assert_allclose(matrix, affine, atol=1e-5)
    # int16 with a slope of max/30000: each voxel within half a step
    np.testing.assert_allclose(np.asarray(image.dataobj), volume, atol=500 / 30000)


def test_checked_loading_accepts_a_series_folder(tmp_path: Path):
    folder = write_dicom_series(_volume(), HEADERS["oblique"][0], tmp_path / "flair")
    image, data = load_checked_volume(folder)
    assert data.shape == SHAPE and data.dtype == np.float32
    np.testing.assert_allclose(load_nifti(folder).affine, image.affine)
    assert read_checked_header(folder).shape == SHAPE


def test_empty_series_is_refused_naming_the_folder(tmp_path: Path):
    folder = write_dicom_series(np.zeros(SHAPE, np.float32), np.eye(4), tmp_path / "zeros")
    with pytest.raises(InputFileError, match="is empty") as exc:
        load_checked_volume(folder)
    assert str(exc.value).startswith(f"{folder}: ")


def test_folder_without_a_series(tmp_path: Path):
    (tmp_path / "none").mkdir()
    (tmp_path / "none" / "notes.txt").write_text("not DICOM")
    with pytest.raises(InputFileError, match="without a DICOM series") as exc:
        load_checked_volume(tmp_path / "none")
    assert str(exc.value).startswith(f"{tmp_path / 'none'}: ") and "\n" not in str(exc.value)
    with pytest.raises(DicomSeriesError, match="not a folder"):
        read_dicom_series(tmp_path / "missing")


def test_folder_with_two_series(tmp_path: Path):
    folder = write_dicom_series(_volume(0), np.eye(4), tmp_path / "two", series=1)
    write_dicom_series(_volume(1), np.eye(4), folder, series=2)
    with pytest.raises(InputFileError, match="holds 2 DICOM series") as exc:
        read_checked_header(folder)
    assert str(exc.value).startswith(f"{folder}: ")
    # one series again: readable
    for f in folder.glob("2_*.dcm"):
        f.unlink()
    assert read_dicom_series(folder).shape == SHAPE
    shutil.rmtree(folder)


def test_series_on_other_grids_disagree_as_files_do(tmp_path: Path):
    first = write_dicom_series(_volume(0), HEADERS["ras"][0], tmp_path / "flair")
    second = write_dicom_series(_volume(1), HEADERS["oblique"][0], tmp_path / "t2")
    images = [(p, load_checked_volume(p)[0]) for p in (first, second)]
    with pytest.raises(InputFileError, match=f"affine differs from that of {first}") as exc:
        check_same_grid(images)
    assert str(exc.value).startswith(f"{second}: ")
