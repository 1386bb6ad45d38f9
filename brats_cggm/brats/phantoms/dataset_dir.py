"""The data set folder a bundle reads, with the phantom set generated into it when it is the bundle's default."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "resolve_dataset_dir",
]

logger = logging.getLogger(__name__)


def resolve_dataset_dir(
    dataset_dir: str | os.PathLike,
    default_dir: str | os.PathLike,
    n: int = 16,
    shape: Sequence[int] = (48, 48, 48),
    seed: int = 0,
    anatomy: str = "geometric",
    spacing: float | Sequence[float] = 4.0,
    variant: str = "default",
) -> Path:
    """The data set folder, with phantoms generated first when it is the bundle's default and empty.

    A folder the user named is never written to: if it is missing or empty, data discovery fails with
    an error naming it.

    Args:
        dataset_dir: the configured data set folder.
        default_dir: the bundle's default folder (the embedded phantom set).
        n: number of phantom cases to generate.
        shape: volume shape of geometric phantoms.
        seed: phantom seed.
        anatomy: ``geometric`` (:mod:`brats_cggm.brats.phantoms.geometric`, ``shape``) or ``mni152``
            (:mod:`brats_cggm.brats.phantoms.anatomical`, ``spacing``; needs the ``anatomy`` extra).
        spacing: voxel size in mm of ``mni152`` phantoms (one number or three, 1 to 8).
        variant: ``mni152`` phantom variant (:data:`brats_cggm.brats.phantoms.anatomical.VARIANTS`), e.g. the
            positive control ``t2-flair-mismatch``; geometric phantoms have only ``default``.

    Returns:
        ``dataset_dir`` as a path.

    Raises:
        ValueError: an unknown ``anatomy`` or ``variant``, or a variant other than ``default`` for ``geometric``.
    """
    from brats_cggm.brats.phantoms.geometric import ensure_phantom_dataset

    if anatomy not in ("geometric", "mni152"):
        raise ValueError(f"phantoms: anatomy must be 'geometric' or 'mni152', got {anatomy!r}")
    if anatomy == "geometric" and variant != "default":
        raise ValueError(f"phantoms: variant {variant!r} is for anatomy 'mni152'; geometric phantoms have none")
    if anatomy == "mni152":
        from brats_cggm.brats.phantoms.anatomical import VARIANTS

        if variant not in VARIANTS:
            raise ValueError(f"phantoms: variant must be one of {list(VARIANTS)}, got {variant!r}")
    dataset_dir = Path(dataset_dir).expanduser()
    if dataset_dir.resolve() == Path(default_dir).expanduser().resolve():
        empty = not dataset_dir.is_dir() or not any(not p.name.startswith(".") for p in dataset_dir.iterdir())
        if anatomy == "geometric":
            if empty:
                logger.info(f"generating {n} phantom BraTS cases of shape {tuple(shape)} in {dataset_dir}")
            ensure_phantom_dataset(dataset_dir, n=n, shape=tuple(shape), seed=seed)
        elif empty:
            from brats_cggm.brats.phantoms.anatomical import write_anatomical_phantom_dataset

            logger.info(f"generating {n} anatomical phantom BraTS cases ({variant}) at {spacing} mm in {dataset_dir}")
            write_anatomical_phantom_dataset(dataset_dir, n=n, seed=seed, spacing=spacing, variant=variant)
    return dataset_dir
