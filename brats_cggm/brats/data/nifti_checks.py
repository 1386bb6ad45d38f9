"""Checks of user-supplied NIfTI inputs, each failing with a one-line message that names the file and the problem.

Where a function reads a file, it also accepts a DICOM series folder (one series, read by
:func:`brats_cggm.brats.data.dicom.read_dicom_series` into an in-memory NIfTI image in the series' geometry):
the checks are then the same as for a NIfTI file, and the errors name the folder.

Scans may be missing, truncated, of the wrong dimensionality, misregistered, without a usable affine, hold
NaN or be empty. Catching these up front turns a stack trace deep in MONAI (or, worse, a silently wrong
segmentation or a NaN loss) into an error the user can act on. Training (the data set header check and the
checked loading of :mod:`brats_cggm.brats.data.transforms`), the inference bundle and ``brats-cggm-infer`` all use
these functions, so the same file fails the same way everywhere.
"""

from __future__ import annotations

import gzip
import os
import time
import zlib
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from brats_cggm.brats.data.dicom import DicomSeriesError, read_dicom_series

__all__ = [
    "AFFINE_TOLERANCE",
    "NIFTI_EXTENSIONS",
    "InputFileError",
    "check_affine",
    "check_header",
    "check_same_grid",
    "check_volume_values",
    "is_nifti_name",
    "load_checked_volume",
    "load_nifti",
    "read_checked_header",
    "read_series_folder",
    "strip_nifti_extension",
]

#: File name endings read as NIfTI.
NIFTI_EXTENSIONS: tuple[str, ...] = (".nii.gz", ".nii")

#: Default largest absolute difference between two affines (mm) for files to count as co-registered.
AFFINE_TOLERANCE = 1e-3


class InputFileError(ValueError):
    """A bad input file. ``str(error)`` is one line: ``"<path>: <problem>"``.

    Args:
        path: the file at fault.
        problem: what is wrong with it.
    """

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = str(path)
        self.problem = " ".join(str(problem).split())
        super().__init__(f"{self.path}: {self.problem}")


def is_nifti_name(path: str | os.PathLike) -> bool:
    """Whether ``path`` ends in ``.nii`` or ``.nii.gz``."""
    return str(path).endswith(NIFTI_EXTENSIONS)


def strip_nifti_extension(name: str) -> str:
    """``name`` without its ``.nii.gz`` or ``.nii`` ending (unchanged if it has neither)."""
    for ext in NIFTI_EXTENSIONS:
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def read_series_folder(path: str | os.PathLike) -> nib.Nifti1Image:
    """The DICOM series of folder ``path`` as a NIfTI image (:func:`~brats_cggm.brats.data.dicom.read_dicom_series`).

    Args:
        path: the series folder.

    Returns:
        The image, voxels read, in the series' geometry.

    Raises:
        InputFileError: naming the folder, if it holds no series, several, or an unreadable one.
    """
    try:
        return read_dicom_series(path)
    except DicomSeriesError as exc:
        raise InputFileError(path, str(exc)) from None


def load_nifti(path: str | os.PathLike) -> nib.Nifti1Image:
    """``nib.load`` for a file that must be NIfTI (1 or 2), its voxels not read yet; a folder is read as its
    DICOM series (:func:`read_series_folder`, voxels read).

    Args:
        path: the file, or a DICOM series folder.

    Returns:
        The image.

    Raises:
        InputFileError: nibabel read the file as another format, or the folder is not one DICOM series.
    """
    if Path(path).is_dir():
        return read_series_folder(path)
    image = nib.load(str(path))
    if not isinstance(image, nib.Nifti1Image):  # Nifti2Image is a subclass
        raise InputFileError(path, f"is not a NIfTI file (nibabel read it as {type(image).__name__})")
    return image


def read_checked_header(path: str | os.PathLike, ndim: int = 3, min_channels: int = 1) -> nib.Nifti1Image:
    """Open a NIfTI file (its header only) and check it with :func:`check_header`.

    A folder is read as a DICOM series (:func:`read_series_folder`, voxels and all) and checked the same way.

    Args:
        path: the file, or a DICOM series folder.
        ndim: 3 for one volume, 4 for a channel-last stack of volumes (MSD layout).
        min_channels: for ``ndim=4``, the least number of volumes the file must hold.

    Returns:
        The image, its voxels not read yet.

    Raises:
        InputFileError: if the file does not exist, is not a NIfTI file or its header is unreadable or fails
            :func:`check_header`.
    """
    p = Path(path)
    if not p.exists():
        raise InputFileError(p, "does not exist")
    if p.is_dir():
        series = read_series_folder(p)
        check_header(p, series.shape, series.affine, ndim=ndim, min_channels=min_channels)
        return series
    if not is_nifti_name(p):
        raise InputFileError(p, "is not a NIfTI file (expected a name ending in .nii or .nii.gz)")
    try:
        image = nib.load(str(p))
    except Exception as exc:  # nibabel raises many types for unreadable headers
        raise InputFileError(p, f"is not a readable NIfTI file ({_describe(exc)})") from exc
    if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InputFileError(p, f"is not a NIfTI file (nibabel read it as {type(image).__name__})")
    check_header(p, image.shape, image.affine, ndim=ndim, min_channels=min_channels)
    return image


def check_header(
    path: str | os.PathLike, shape: Sequence[int], affine: np.ndarray, ndim: int = 3, min_channels: int = 1
) -> None:
    """Check a NIfTI file's dimensionality and affine.

    Args:
        path: the file, named in the error.
        shape: its data shape.
        affine: its voxel-to-world matrix.
        ndim: 3 for one volume (trailing axes of length 1 allowed), 4 for a channel-last stack of volumes
            (MSD layout).
        min_channels: for ``ndim=4``, the least number of volumes the file must hold.

    Raises:
        InputFileError: for the wrong dimensionality, or an affine that :func:`check_affine` rejects.
    """
    shape = tuple(int(s) for s in shape)
    # Trailing axes of length 1 (X, Y, Z, 1) hold one volume all the same: readers drop them.
    if ndim == 3 and (len(shape) < 3 or any(s != 1 for s in shape[3:])):
        raise InputFileError(path, f"has shape {shape}: {len(shape)}-D, expected a 3-D volume")
    if ndim == 4 and (len(shape) != 4 or shape[3] < min_channels):
        raise InputFileError(
            path, f"has shape {shape}: expected a 4-D (X, Y, Z, C) image with at least {min_channels} channels"
        )
    check_affine(path, affine)


def check_affine(path: str | os.PathLike, affine: np.ndarray) -> None:
    """Check that a voxel-to-world matrix is usable: finite, and its 3x3 part invertible.

    A NaN entry would pass every comparison with a tolerance (``nan > tol`` is false) and a singular one
    maps the volume onto a plane: neither gives a place in space to resample, reorient or compare to.

    Args:
        path: the file the affine belongs to, named in the error.
        affine: the ``(4, 4)`` matrix (numpy or torch).

    Raises:
        InputFileError: if the affine has NaN or infinite entries or is singular.
    """
    matrix = np.asarray(affine.detach().cpu() if hasattr(affine, "detach") else affine, dtype=np.float64)
    if not np.isfinite(matrix).all():
        raise InputFileError(path, "affine (voxel-to-world matrix) has NaN or infinite entries")
    linear = matrix[:3, :3]
    # Relative to the voxel size, so that sub-millimetre voxels are not mistaken for a singular matrix.
    scale = float(np.abs(linear).max())
    if scale == 0.0 or abs(float(np.linalg.det(linear))) <= 1e-6 * scale**3:
        raise InputFileError(path, f"affine (voxel-to-world matrix) is singular: {np.round(linear, 4).tolist()}")


def check_volume_values(path: str | os.PathLike, volume: np.ndarray | torch.Tensor, channel: str = "") -> None:
    """Reject a volume with NaN or infinite values, or with no non-zero voxel.

    Args:
        path: the file the volume comes from, named in the error.
        volume: the voxels (numpy or torch).
        channel: which volume of the file this is (e.g. ``"channel 2 (t1ce)"``), or empty for the whole file.

    Raises:
        InputFileError: naming the file (and channel) and the problem.
    """
    where = f"{channel} " if channel else ""
    if isinstance(volume, torch.Tensor):  # no copy into numpy
        finite, nonzero = bool(volume.isfinite().all()), bool(volume.any())
    else:
        array = np.asanyarray(volume)
        finite = not np.issubdtype(array.dtype, np.floating) or bool(np.isfinite(array).all())
        nonzero = bool(array.any())
    if not finite:
        raise InputFileError(path, f"{where}contains NaN or infinite values")
    if not nonzero:
        raise InputFileError(path, f"{where}is empty: every voxel is 0")


def load_checked_volume(
    path: str | os.PathLike,
    ndim: int = 3,
    min_channels: int = 1,
    check_values: bool = True,
    timings: dict[str, float] | None = None,
) -> tuple[nib.Nifti1Image, np.ndarray]:
    """Load a NIfTI file (or a DICOM series folder, see :func:`read_series_folder`) completely and check it.

    Args:
        path: the file, or a DICOM series folder.
        ndim: 3 for one volume, 4 for a channel-last stack of volumes (MSD layout).
        min_channels: for ``ndim=4``, the least number of volumes the file must hold.
        check_values: also reject non-finite values and all-zero volumes (channels).
        timings: if given, its ``"read"`` entry grows by the seconds spent reading and decompressing the file
            (header and voxels); the rest of the call is the checks.

    Returns:
        The image and its data array (scaled by the header's slope and intercept; 3-D for ``ndim=3``). The
        image of a ``.gz`` file holds its decompressed bytes: reading its voxels again costs a copy.

    Raises:
        InputFileError: if the file does not exist, is not a NIfTI file, cannot be decompressed (a ``.gz``
            file's checksum is verified) or read entirely, has the wrong dimensionality or an unusable
            affine (:func:`check_affine`), holds NaN or infinite values, or is all zero; or a folder is not one
            readable DICOM series.
    """
    p = Path(path)
    start = time.perf_counter()
    compressed = p.is_file() and is_nifti_name(p) and p.name.endswith(".gz")
    raw = _read_gzip(p) if compressed else None
    image = read_checked_header(p, ndim=ndim, min_channels=min_channels)
    if raw is not None:
        image = type(image).from_bytes(raw)
    try:
        data = np.asanyarray(image.dataobj)
    except (EOFError, zlib.error, gzip.BadGzipFile, OSError, ValueError) as exc:
        raise InputFileError(p, f"truncated or corrupt data ({_describe(exc)})") from exc
    if timings is not None:
        timings["read"] = timings.get("read", 0.0) + time.perf_counter() - start
    if ndim == 3:
        data = data.reshape(data.shape[:3])
    if check_values:
        if data.ndim == 3:
            check_volume_values(p, data)
        else:
            for c in range(data.shape[3]):
                check_volume_values(p, data[..., c], f"channel {c}")
    return image, data


def _read_gzip(path: Path) -> bytes:
    # nibabel stops reading a gzip stream once it has the voxels, so it never reaches the CRC at the end:
    # a corrupt file would give wrong voxels silently. Reading the stream to its end checks it, and the
    # bytes read spare a second decompression.
    try:
        with gzip.open(path, "rb") as stream:
            return stream.read()
    except (EOFError, zlib.error, gzip.BadGzipFile, OSError) as exc:
        raise InputFileError(path, f"truncated or corrupt gzip data ({_describe(exc)})") from None


def check_same_grid(
    images: Sequence[tuple[str | os.PathLike, nib.Nifti1Image]], tolerance: float = AFFINE_TOLERANCE
) -> None:
    """Check that images share their spatial shape and (within ``tolerance``) their affine.

    Args:
        images: ``(path, image)`` pairs; the first is the reference.
        tolerance: largest allowed absolute difference of any affine entry.

    Raises:
        InputFileError: naming the first file that disagrees with the reference, and how.
    """
    if not images:
        return
    ref_path, ref = images[0]
    check_affine(ref_path, ref.affine)
    ref_shape = tuple(ref.shape[:3])
    for path, image in images[1:]:
        shape = tuple(image.shape[:3])
        if shape != ref_shape:
            raise InputFileError(path, f"spatial shape {shape} differs from {ref_shape} of {ref_path}")
        check_affine(path, image.affine)
        diff = float(np.max(np.abs(np.asarray(image.affine) - np.asarray(ref.affine))))
        if not diff <= tolerance:
            raise InputFileError(
                path, f"affine differs from that of {ref_path} by up to {diff:.4g} (tolerance {tolerance:g})"
            )


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
