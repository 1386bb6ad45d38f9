"""The training and validation datasets of the bundle, by cache mode: ``disk``, ``memory`` or ``none``."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from monai.data import CacheDataset, Dataset
from monai.transforms import Compose, DeleteItemsd, RandCropByPosNegLabeld

from brats_cggm.brats.data.cache.device_augmentation import DEVICE_AUGMENTED
from brats_cggm.brats.data.cache.disk import LoadCacheEntryd, RandCropCachedPatchd, cache_chains, fill_cache
from brats_cggm.brats.data.cache.memory_check import check_memory_cache_fits
from brats_cggm.brats.data.transforms import train_transforms, val_transforms

__all__ = ["CACHE_MODES", "cached_train_transforms", "training_dataset", "validation_dataset"]

#: ``disk``: memory-mapped entries (:mod:`~brats_cggm.brats.data.cache.disk`); ``memory``: ``CacheDataset``;
#: ``none``: every case loaded and preprocessed at each draw.
CACHE_MODES = ("disk", "memory", "none")


def _check_mode(cache: str) -> None:
    if cache not in CACHE_MODES:
        raise ValueError(f"cache: {cache!r}: expected one of {CACHE_MODES}")


def cached_train_transforms(
    patch_size: Sequence[int] = (48, 48, 48), num_samples: int = 2, device_augmentation: bool = False, **kwargs: Any
) -> Compose:
    """The training chain on disk cache entries: open the entry, crop patches from the memory maps, then the
    random tail of :func:`~brats_cggm.brats.data.transforms.train_transforms` (flips, intensity jitter) unchanged.

    Args:
        patch_size: the training patch.
        num_samples: patches per case and draw.
        device_augmentation: leave the flips and the intensity jitter to the trainer's ``prepare_batch``
            (:func:`~brats_cggm.brats.data.cache.device_augmentation.augmenting_prepare_batch`).
        kwargs: :func:`~brats_cggm.brats.data.transforms.preprocessing` options (only their effect on the random
            tail matters: the entries already hold the preprocessed case).

    Returns:
        The chain.
    """
    _, tail = cache_chains("train", patch_size, num_samples, kwargs)
    crop = next(t for t in tail if isinstance(t, RandCropByPosNegLabeld))
    rest = [t for t in tail if t is not crop and not isinstance(t, DeleteItemsd)]
    if device_augmentation:
        rest = [t for t in rest if not isinstance(t, DEVICE_AUGMENTED)]
    return Compose([LoadCacheEntryd(whole=False), RandCropCachedPatchd.like(crop), *rest])


def training_dataset(
    data: Sequence[Mapping[str, Any]],
    cache: str = "disk",
    patch_size: Sequence[int] = (48, 48, 48),
    num_samples: int = 2,
    data_options: Mapping[str, Any] | None = None,
    cache_dir: str | os.PathLike | None = None,
    cache_rate: float = 1.0,
    cache_workers: int = 1,
    device_augmentation: bool = False,
    cache_verify: str = "stat",
) -> Dataset:
    """The training dataset for a cache mode.

    Args:
        data: the training data list.
        cache: one of :data:`CACHE_MODES`.
        patch_size: the training patch.
        num_samples: patches per case and draw.
        data_options: :func:`~brats_cggm.brats.data.transforms.preprocessing` options.
        cache_dir: the disk cache's root (None: :func:`~brats_cggm.brats.data.cache.disk.default_cache_dir`).
        cache_rate: fraction of cases held by the in-memory cache.
        cache_workers: processes building missing disk entries.
        device_augmentation: leave the flips and the intensity jitter to the trainer's ``prepare_batch``.
        cache_verify: how disk entries' input files are compared (``stat`` or ``content``,
            :mod:`~brats_cggm.brats.data.cache.fingerprint`).

    Returns:
        A MONAI dataset yielding lists of ``num_samples`` patch dicts.

    Raises:
        ValueError: an unknown cache mode.
        MemoryError: ``cache: memory`` would not fit in the available memory.
    """
    _check_mode(cache)
    options = dict(data_options or {})
    if cache == "disk":
        entries = fill_cache(data, "train", cache_dir, patch_size, options, cache_workers, verify=cache_verify)
        return Dataset(entries, cached_train_transforms(patch_size, num_samples, device_augmentation, **options))
    transform = train_transforms(patch_size=patch_size, num_samples=num_samples, **options)
    if device_augmentation:
        transform = Compose([t for t in transform.transforms if not isinstance(t, DEVICE_AUGMENTED)])
    if cache == "none":
        return Dataset(list(data), transform)
    check_memory_cache_fits(data, options.get("pixdim"), options.get("channel_order"), cache_rate)
    # One cache thread: MONAI's NibabelReader keeps the file names of its last read on the reader, so
    # concurrent threads can mix cases up. No copy per draw: the random transforms crop, then build new tensors.
    return CacheDataset(list(data), transform, cache_rate=cache_rate, num_workers=1, copy_cache=False)


def validation_dataset(
    data: Sequence[Mapping[str, Any]],
    cache: str = "disk",
    data_options: Mapping[str, Any] | None = None,
    cache_dir: str | os.PathLike | None = None,
    cache_rate: float = 1.0,
    cache_workers: int = 1,
    cache_verify: str = "stat",
) -> Dataset:
    """The validation dataset for a cache mode (whole preprocessed volumes; with ``disk``, read per item).

    Args:
        data: the validation data list.
        cache: one of :data:`CACHE_MODES`.
        data_options: :func:`~brats_cggm.brats.data.transforms.preprocessing` options.
        cache_dir: the disk cache's root.
        cache_rate: fraction of cases held by the in-memory cache.
        cache_workers: processes building missing disk entries.
        cache_verify: how disk entries' input files are compared (``stat`` or ``content``).

    Returns:
        A MONAI dataset of ``{"image", "label", ...}`` dicts.

    Raises:
        ValueError: an unknown cache mode.
        MemoryError: ``cache: memory`` would not fit in the available memory.
    """
    _check_mode(cache)
    options = dict(data_options or {})
    if cache == "disk":
        entries = fill_cache(
            data, "val", cache_dir, data_options=options, num_workers=cache_workers, verify=cache_verify
        )
        return Dataset(entries, Compose([LoadCacheEntryd(whole=True)]))
    transform = val_transforms(**options)
    if cache == "none":
        return Dataset(list(data), transform)
    check_memory_cache_fits(data, options.get("pixdim"), options.get("channel_order"), cache_rate)
    return CacheDataset(list(data), transform, cache_rate=cache_rate, num_workers=1)
