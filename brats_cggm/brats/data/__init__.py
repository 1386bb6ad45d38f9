"""Finding BraTS cases, checking NIfTI files, labels and regions, transforms, and the disk cache."""

__all__ = [
    "cache",
    "discovery",
    "labels",
    "nifti_checks",
    "splits",
    "transforms",
]
