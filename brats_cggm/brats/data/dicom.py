"""DICOM series folders as NIfTI images: one series read with SimpleITK, its geometry as a RAS affine.

A folder given for a modality must hold exactly one DICOM series (the slices of one volume). It is read
with SimpleITK's ``ImageSeriesReader`` (slices sorted by position, rescale slope and intercept applied) and
handed on as an in-memory ``nibabel.Nifti1Image`` whose affine is the series' geometry, so that every later
step (checks, preprocessing, the output header) treats it as it treats a NIfTI file.

DICOM (and ITK) coordinates are LPS: x grows to the patient's left, y to the posterior. NIfTI, nibabel and
MONAI use RAS, so the affine's first two rows change sign (as MONAI's ``ITKReader`` does).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

__all__ = ["LPS_TO_RAS", "DicomSeriesError", "read_dicom_series", "series_ids", "sitk_affine"]

#: Diagonal that turns LPS world coordinates into RAS ones (and back).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


class DicomSeriesError(ValueError):
    """A folder that is not one readable DICOM series; ``str(error)`` says what is wrong (not where)."""


def sitk_affine(origin: Sequence[float], spacing: Sequence[float], direction: Sequence[float]) -> np.ndarray:
    """The RAS voxel-to-world matrix of a 3-D SimpleITK geometry (voxel index in ``(x, y, z)`` order).

    ITK maps index ``i`` to the LPS point ``origin + D diag(spacing) i`` (``D`` the row-major direction
    matrix); flipping the sign of x and y gives the RAS point.

    Args:
        origin: ``GetOrigin()``, LPS, mm.
        spacing: ``GetSpacing()``, mm.
        direction: ``GetDirection()``, 9 values, row-major.

    Returns:
        The ``(4, 4)`` affine in RAS, as nibabel and MONAI expect it.
    """
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(direction, dtype=np.float64).reshape(3, 3) @ np.diag(np.asarray(spacing, np.float64))
    lps[:3, 3] = np.asarray(origin, dtype=np.float64)
    return LPS_TO_RAS @ lps


def series_ids(folder: str | os.PathLike) -> list[str]:
    """The series instance UIDs of the DICOM files directly in ``folder`` (sub-folders are not searched)."""
    # ITK prints a warning to stderr for a folder without a series: the caller's error says it, once
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        return list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def read_dicom_series(folder: str | os.PathLike) -> nib.Nifti1Image:
    """Read the one DICOM series of ``folder`` as a NIfTI image in its own geometry.

    Args:
        folder: a folder holding the slice files of one series (other files are ignored).

    Returns:
        A ``Nifti1Image``: ``(X, Y, Z)`` float32 voxels (rescale slope and intercept applied), the series'
        RAS affine as qform and sform (code 1, scanner), units mm.

    Raises:
        DicomSeriesError: if the folder holds no DICOM series, several, or one that cannot be read as a
            single-channel 3-D volume.
    """
    path = Path(folder)
    if not path.is_dir():
        raise DicomSeriesError("is not a folder (a DICOM series is given as the folder of its slices)")
    ids = series_ids(path)
    if not ids:
        raise DicomSeriesError(
            "is a directory without a DICOM series: expected a NIfTI file (.nii or .nii.gz) or a folder holding "
            "the slice files of one DICOM series"
        )
    if len(ids) > 1:
        raise DicomSeriesError(
            f"holds {len(ids)} DICOM series ({', '.join(ids)}); give a folder with one series (one modality)"
        )
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path), ids[0])
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise DicomSeriesError(f"DICOM series {ids[0]} cannot be read ({' '.join(str(exc).split())[:300]})") from exc
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise DicomSeriesError(f"has {image.GetNumberOfComponentsPerPixel()} values per voxel, expected grey values")
    if image.GetDimension() != 3:
        raise DicomSeriesError(f"is read as a {image.GetDimension()}-D image, expected a 3-D volume")
    # SimpleITK's arrays are (z, y, x); NIfTI's voxel index is (x, y, z)
    data = np.ascontiguousarray(sitk.GetArrayFromImage(image).transpose(2, 1, 0), dtype=np.float32)
    affine = sitk_affine(image.GetOrigin(), image.GetSpacing(), image.GetDirection())
    out = nib.Nifti1Image(data, affine)
    out.set_qform(affine, code=1)
    out.set_sform(affine, code=1)
    out.header.set_xyzt_units("mm", "sec")
    return out
