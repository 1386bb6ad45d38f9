"""Caches of the BraTS preprocessing: memory-mapped on disk (the default), in memory, or none."""

from brats_cggm.brats.data.cache.datasets import (
    CACHE_MODES,
    cached_train_transforms,
    training_dataset,
    validation_dataset,
)
from brats_cggm.brats.data.cache.disk import (
    CACHE_FORMAT_VERSION,
    CacheEntryError,
    FillReport,
    LoadCacheEntryd,
    RandCropCachedPatchd,
    default_cache_dir,
    fill_cache,
    preprocessing_key,
)
from brats_cggm.brats.data.cache.memory_check import check_memory_cache_fits, estimate_memory_cache_bytes
from brats_cggm.brats.data.cache.prepare import prepare_cache

__all__ = [
    "CACHE_FORMAT_VERSION",
    "CACHE_MODES",
    "CacheEntryError",
    "FillReport",
    "LoadCacheEntryd",
    "RandCropCachedPatchd",
    "cached_train_transforms",
    "check_memory_cache_fits",
    "default_cache_dir",
    "estimate_memory_cache_bytes",
    "fill_cache",
    "prepare_cache",
    "preprocessing_key",
    "training_dataset",
    "validation_dataset",
]
