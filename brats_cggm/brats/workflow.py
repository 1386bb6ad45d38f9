"""Small library functions the BraTS bundle configs call (the bundle itself only wires objects)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from brats_cggm.brats.phantoms import ensure_phantom_dataset

__all__ = ["resolve_dataset_dir"]

logger = logging.getLogger(__name__)


def resolve_dataset_dir(
    dataset_dir: str | os.PathLike,
    default_dir: str | os.PathLike,
    n: int = 16,
    shape: Sequence[int] = (48, 48, 48),
    seed: int = 0,
) -> Path:
    """The data set folder, with phantoms generated first when it is the bundle's default and empty.

    A folder the user named is never written to: if it is missing or empty, data discovery fails with
    an error naming it.

    Args:
        dataset_dir: the configured data set folder.
        default_dir: the bundle's default folder (the embedded phantom set).
        n: number of phantom cases to generate.
        shape: phantom volume shape.
        seed: phantom seed.

    Returns:
        ``dataset_dir`` as a path.
    """
    dataset_dir = Path(dataset_dir).expanduser()
    if dataset_dir.resolve() == Path(default_dir).expanduser().resolve():
        if not dataset_dir.is_dir() or not any(dataset_dir.iterdir()):
            logger.info(f"generating {n} phantom BraTS cases of shape {tuple(shape)} in {dataset_dir}")
        ensure_phantom_dataset(dataset_dir, n=n, shape=tuple(shape), seed=seed)
    return dataset_dir
