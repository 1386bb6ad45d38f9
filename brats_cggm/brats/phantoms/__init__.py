"""Synthetic BraTS-layout cases: geometric phantoms and anatomical phantoms on the MNI152 template."""

__all__ = [
    "anatomical",
    "dataset_dir",
    "geometric",
    "mr_signal",
]
