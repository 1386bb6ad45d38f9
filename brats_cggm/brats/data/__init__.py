"""Finding BraTS cases, checking NIfTI files and reading DICOM series, labels and regions, transforms, and the disk cache."""

__all__ = [
    "cache",
    "dicom",
    "discovery",
    "labels",
    "nifti_checks",
    "splits",
    "transforms",
]
