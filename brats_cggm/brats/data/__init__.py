"""Finding BraTS cases, reading NIfTI files and DICOM series with their checks, labels, transforms, the disk cache."""

__all__ = [
    "cache",
    "dicom",
    "discovery",
    "labels",
    "nifti_checks",
    "splits",
    "transforms",
]
