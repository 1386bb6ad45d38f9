"""Small DICOM series written with SimpleITK, after its "Dicom Series From Array" example.

One file per slice, with the tags a reader needs to stack them: image position (0020|0032) and orientation
(0020|0037), pixel spacing (0028|0030), series instance UID (0020|000e), instance number (0020|0013); float
voxels are stored as int16 with a rescale slope (0028|1053) and intercept (0028|1052).
"""

from __future__ import annotations

import locale
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from brats_cggm.brats.data.dicom import LPS_TO_RAS, read_dicom_series

__all__ = ["nifti_twin", "write_dicom_series"]

_UID_ROOT = "1.2.826.0.1.3680043.2.1125.7"


def write_dicom_series(volume: np.ndarray, affine: np.ndarray, folder: Path, series: int = 1) -> Path:
    """Write ``volume`` ``(X, Y, Z)`` on the RAS ``affine`` as one DICOM series (one file per z slice).

    Args:
        volume: the voxels (float; stored as int16 with a slope keeping 1/30000 of the largest magnitude).
        affine: RAS voxel-to-world matrix; its direction must be right-handed (DICOM stacks slices along the
            cross product of the in-plane axes).
        folder: created if needed; slice files ``<series>_<slice>.dcm``.
        series: number making the series instance UID (two series in one folder differ in it).

    Returns:
        ``folder``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    lps = LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    direction = lps[:3, :3] / spacing
    image = sitk.GetImageFromArray(np.asarray(volume, dtype=np.float64).transpose(2, 1, 0))
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([float(o) for o in lps[:3, 3]])
    image.SetDirection([float(d) for d in direction.flatten()])
    slope = max(float(np.abs(volume).max()), 1.0) / 30000.0
    d = image.GetDirection()
    tags = [
        ("0008|0060", "MR"),
        ("0008|0031", "120000"),
        ("0008|0021", "20260101"),
        ("0008|0008", "DERIVED\\SECONDARY"),
        ("0020|000d", f"{_UID_ROOT}.1"),
        ("0020|000e", f"{_UID_ROOT}.2.{series}"),
        ("0020|0052", f"{_UID_ROOT}.3"),
        ("0020|0037", "\\".join(f"{v:.8f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7]))),
        ("0008|103e", f"series {series}"),
        ("0028|1053", f"{slope:.10g}"),
        ("0028|1052", "0"),
        ("0028|0100", "16"),
        ("0028|0101", "16"),
        ("0028|0102", "15"),
        ("0028|0103", "1"),
    ]
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    # GDCM's writer sets the process locale to "C": every later open() without an encoding would then read ASCII
    # (the bundle configs hold UTF-8) in a UTF-8 locale; reading a series leaves the locale alone.
    saved_locale = locale.setlocale(locale.LC_ALL, None)
    try:
        _write_slices(image, tags, spacing, series, folder, writer)
    finally:
        locale.setlocale(locale.LC_ALL, saved_locale)
    return folder


def _write_slices(
    image: sitk.Image, tags: list[tuple[str, str]], spacing: np.ndarray, series: int, folder: Path, writer: Any
) -> None:
    """One DICOM file per slice of ``image`` along its third axis, with ``tags`` and the slice's own."""
    for k in range(image.GetDepth()):
        part = image[:, :, k]
        for tag, value in tags:
            part.SetMetaData(tag, value)
        part.SetMetaData("0020|0032", "\\".join(f"{v:.8f}" for v in image.TransformIndexToPhysicalPoint((0, 0, k))))
        part.SetMetaData("0028|0030", f"{spacing[1]:.8f}\\{spacing[0]:.8f}")
        part.SetMetaData("0018|0050", f"{spacing[2]:.8f}")
        part.SetMetaData("0020|0013", str(k + 1))
        part.SetMetaData("0008|0018", f"{_UID_ROOT}.4.{series}.{k + 1}")
        writer.SetFileName(str(folder / f"{series}_{k:04d}.dcm"))
        writer.Execute(part)


def nifti_twin(series_folder: Path, path: Path) -> Path:
    """The series read back (its int16-quantised voxels, its geometry) saved as a NIfTI file at ``path``."""
    image = read_dicom_series(series_folder)
    twin = nib.Nifti1Image(np.asarray(image.dataobj, dtype=np.float32), image.affine)
    twin.set_qform(image.affine, code=1)
    twin.set_sform(image.affine, code=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(twin, str(path))
    return path
