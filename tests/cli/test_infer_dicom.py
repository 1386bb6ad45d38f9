"""``brats-cggm-infer`` on DICOM series: the labels of the NIfTI twin, on the series' geometry; bad folders fail."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from brats_cggm.brats.data.dicom import read_dicom_series
from brats_cggm.cli.infer import main
from tests.helpers.dicom_series import nifti_twin, write_dicom_series
from tests.helpers.inference_cases import HEADERS

CASE = "BraTS2021_00000"
MODALITIES = ("flair", "t1ce", "t1", "t2")


def _run(inputs: list[str], run_dir: Path, out: Path) -> int:
    return main([*inputs, "--bundle", str(run_dir), "--output-dir", str(out), "--device", "cpu", "--workers", "0"])


def _dicom_case(phantom_case: Path, root: Path, case_id: str, affine: np.ndarray | None = None) -> Path:
    """The phantom case as one DICOM series per modality (``root/case_id/<modality>/``), on ``affine`` if given."""
    for m in MODALITIES:
        image = nib.load(str(phantom_case / f"{phantom_case.name}_{m}.nii.gz"))
        volume = np.asarray(image.get_fdata(), np.float32)
        write_dicom_series(volume, image.affine if affine is None else affine, root / case_id / m)
    return root / case_id


def _twin_case(dicom_case: Path, root: Path) -> Path:
    """The NIfTI twin: the series read back (int16-quantised voxels, geometry) as BraTS-named files."""
    for m in MODALITIES:
        nifti_twin(dicom_case / m, root / dicom_case.name / f"{dicom_case.name}_{m}.nii.gz")
    return root / dicom_case.name


@pytest.mark.parametrize("geometry", ["phantom", "oblique"])
def test_dicom_case_segments_as_its_nifti_twin(
    geometry: str, phantom_dataset: Path, tiny_run_dir: Path, tmp_path: Path, capsys
):
    affine = HEADERS["oblique"][0] if geometry == "oblique" else None
    dicom = _dicom_case(phantom_dataset / CASE, tmp_path / "dicom", CASE, affine)
    twin = _twin_case(dicom, tmp_path / "nifti")
    assert _run(["--input", str(dicom)], tiny_run_dir, tmp_path / "out_dicom") == 0
    assert _run(["--input", str(twin)], tiny_run_dir, tmp_path / "out_nifti") == 0
    assert "summary: 1 segmented, 0 failed" in capsys.readouterr().out
    from_dicom = nib.load(str(tmp_path / "out_dicom" / f"{CASE}.nii.gz"))
    from_nifti = nib.load(str(tmp_path / "out_nifti" / f"{CASE}.nii.gz"))
    labels = np.asanyarray(from_dicom.dataobj)
    np.testing.assert_array_equal(labels, np.asanyarray(from_nifti.dataobj))
    assert labels.dtype == np.uint8 and (labels > 0).any()  # not trivially equal
    # the output lies on the series' geometry
    series_affine = read_dicom_series(dicom / "flair").affine
    np.testing.assert_allclose(from_dicom.affine, series_affine, atol=1e-5)
    if affine is not None:
        np.testing.assert_allclose(from_dicom.affine, affine, atol=1e-4)
    record = (tmp_path / "out_dicom" / f"{CASE}.json").read_text()
    assert str(dicom / "flair") in record


def test_explicit_series_folders_take_the_case_id_of_their_parent(
    phantom_dataset: Path, tiny_run_dir: Path, tmp_path: Path, capsys
):
    dicom = _dicom_case(phantom_dataset / CASE, tmp_path / "dicom", "patient7")
    flags = [arg for m in MODALITIES for arg in (f"--{m}", str(dicom / m))]
    assert _run(flags, tiny_run_dir, tmp_path / "out") == 0
    assert (tmp_path / "out" / "patient7.nii.gz").is_file()
    assert "[1/1] patient7:" in capsys.readouterr().out


def test_bad_series_folders_fail_alone_naming_the_folder(
    phantom_dataset: Path, tiny_run_dir: Path, tmp_path: Path, capsys
):
    batch = tmp_path / "batch"
    _dicom_case(phantom_dataset / CASE, batch, "good")
    empty = _dicom_case(phantom_dataset / CASE, batch, "empty_t1")
    for f in (empty / "t1").iterdir():
        f.unlink()
    two = _dicom_case(phantom_dataset / CASE, batch, "two_series")
    write_dicom_series(np.ones((4, 4, 4), np.float32), np.eye(4), two / "t2", series=2)
    out = tmp_path / "out"
    assert _run(["--input", str(batch)], tiny_run_dir, out) == 1
    log = capsys.readouterr()
    assert "summary: 1 segmented, 2 failed" in log.out
    failed = log.err.split("failed:")[1]
    assert f"{empty / 't1'}: is a directory without a DICOM series" in failed
    assert f"{two / 't2'}: holds 2 DICOM series" in failed
    # nothing half-written: only the good case's outputs
    assert sorted(p.name for p in out.iterdir()) == ["good.json", "good.nii.gz"]
