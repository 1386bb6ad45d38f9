"""Whether an in-memory (``CacheDataset``) cache of a data set fits in this machine's memory, from the headers alone."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from brats_cggm.brats.data.labels import REGIONS
from brats_cggm.brats.data.nifti_checks import load_nifti

__all__ = ["available_memory_bytes", "check_memory_cache_fits", "estimate_memory_cache_bytes"]


def available_memory_bytes() -> int:
    """Memory available to new allocations: ``MemAvailable`` of ``/proc/meminfo``, else free physical pages.

    Returns:
        Bytes.
    """
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))


def _case_bytes(item: Mapping[str, Any], pixdim: Sequence[float] | None, n_channels: int | None) -> int:
    image = item["image"]
    first = image if isinstance(image, (str, os.PathLike)) else image[0]
    header = load_nifti(first).header
    shape = header.get_data_shape()
    voxels = float(np.prod(shape[:3]))
    if pixdim is not None:
        # Resampling to pixdim changes the voxel count by the ratio of voxel volumes.
        voxels *= float(np.prod(header.get_zooms()[:3])) / float(np.prod(pixdim))
    channels = n_channels or (len(shape) > 3 and int(shape[3])) or (1 if isinstance(image, str) else len(image))
    label_channels = len(REGIONS) if "label" in item else 0
    # float32 image and region masks (the chain's EnsureTyped), as CacheDataset holds them.
    return int(voxels * (channels + label_channels) * 4)


def estimate_memory_cache_bytes(
    items: Sequence[Mapping[str, Any]],
    pixdim: Sequence[float] | None = (1.0, 1.0, 1.0),
    channel_order: Sequence[int] | None = None,
    cache_rate: float = 1.0,
) -> int:
    """An upper bound of the memory ``CacheDataset`` takes for ``items``: float32 voxels after resampling.

    Read from the NIfTI headers only. The foreground crop makes the real figure smaller (about half of the
    240 x 240 x 155 BraTS grid is background).

    Args:
        items: the data list.
        pixdim: the spacing every case is resampled to (None: kept).
        channel_order: the channels taken from a 4-D image (None: all, or one per file).
        cache_rate: the fraction of cases cached.

    Returns:
        Bytes.
    """
    n_cached = int(len(items) * cache_rate)
    n_channels = len(channel_order) if channel_order else None
    return sum(_case_bytes(item, pixdim, n_channels) for item in list(items)[:n_cached])


def check_memory_cache_fits(
    items: Sequence[Mapping[str, Any]],
    pixdim: Sequence[float] | None = (1.0, 1.0, 1.0),
    channel_order: Sequence[int] | None = None,
    cache_rate: float = 1.0,
    ranks_per_machine: int | None = None,
    available: int | None = None,
) -> int:
    """Refuse an in-memory cache that would not fit, before anything is loaded.

    Args:
        items: the data list.
        pixdim: see :func:`estimate_memory_cache_bytes`.
        channel_order: see :func:`estimate_memory_cache_bytes`.
        cache_rate: see :func:`estimate_memory_cache_bytes`.
        ranks_per_machine: processes on this machine each holding a cache (default: ``$LOCAL_WORLD_SIZE`` or 1).
        available: available memory in bytes (default: :func:`available_memory_bytes`).

    Returns:
        The estimate (bytes, all ranks of this machine).

    Raises:
        MemoryError: the estimate exceeds the available memory; the message names the settings to change.
    """
    ranks = ranks_per_machine or int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    needed = estimate_memory_cache_bytes(items, pixdim, channel_order, cache_rate) * ranks
    available = available_memory_bytes() if available is None else available
    if needed > available:
        raise MemoryError(
            f"cache: memory would hold {int(len(items) * cache_rate)} case(s) in memory on {ranks} rank(s): about "
            f"{needed / 1e9:.1f} GB (upper bound from the headers) but {available / 1e9:.1f} GB is available; "
            "set cache: disk (memory-mapped, does not grow with the data set) or lower cache_rate"
        )
    return needed
