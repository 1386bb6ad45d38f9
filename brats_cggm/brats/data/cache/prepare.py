"""Build the disk cache of a data set ahead of training, as the training bundle would build it."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from brats_cggm.brats.data.cache.disk import FillReport, default_cache_dir, fill_cache
from brats_cggm.brats.data.cache.integrity import entry_problem
from brats_cggm.brats.data.discovery import discover_dataset
from brats_cggm.brats.data.splits import split_datalist

__all__ = ["prepare_cache", "recheck_entries"]


def prepare_cache(
    dataset_dir: str | os.PathLike,
    cache_dir: str | os.PathLike | None = None,
    modalities: Sequence[str] = ("flair", "t1ce", "t1", "t2"),
    patch_size: Sequence[int] = (32, 32, 32),
    val_fraction: float = 0.2,
    seed: int = 0,
    pixdim: Sequence[float] | None = (1.0, 1.0, 1.0),
    patterns: Mapping[str, str] | str | None = None,
    label_convention: str | None = None,
    num_workers: int = 1,
    progress: bool = True,
    cache_verify: str = "stat",
    reports: dict[str, FillReport] | None = None,
) -> dict[str, Any]:
    """Fill the disk cache of a data set: training entries for the training split, validation entries for the rest.

    The defaults are those of ``bundles/brats_cggm/configs/train.yaml``; a run with the same settings then
    finds every entry built (any setting that changes the preprocessing or the split builds other entries).

    Args:
        dataset_dir: the data set folder (BraTS or MSD layout).
        cache_dir: the cache's root (None: :func:`~brats_cggm.brats.data.cache.disk.default_cache_dir`).
        modalities: the modalities, in input channel order.
        patch_size: the training patch.
        val_fraction: the validation fraction of the split.
        seed: the split's seed.
        pixdim: the spacing every case is resampled to (None: kept).
        patterns: file name patterns (see :func:`~brats_cggm.brats.data.discovery.discover_dataset`).
        label_convention: the labels' convention (None: from the names).
        num_workers: processes building entries.
        progress: show a progress bar with an ETA.
        cache_verify: how entries are compared with their input files (``stat`` or ``content``).
        reports: filled with a :class:`~brats_cggm.brats.data.cache.disk.FillReport` per kind (``train``, ``val``).

    Returns:
        ``{"cache_dir", "train": [entries], "val": [entries]}``.

    Raises:
        FileNotFoundError: the data set folder or a case's file is missing.
        ValueError: the data set or a setting is invalid.
    """
    dataset = discover_dataset(dataset_dir, modalities, label_convention=label_convention, patterns=patterns)
    train, val = split_datalist(dataset.items, val_fraction=val_fraction, seed=seed)
    data_options = {
        "label_convention": dataset.label_convention,
        "channel_order": dataset.channel_order,
        "pixdim": None if pixdim is None else [float(p) for p in pixdim],
    }
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    reports = reports if reports is not None else {}
    result: dict[str, Any] = {"cache_dir": str(root)}
    for kind, items in (("train", train), ("val", val)):
        report = reports.setdefault(kind, FillReport())
        result[kind] = fill_cache(
            items, kind, root, patch_size, data_options, num_workers, progress, verify=cache_verify, report=report
        )
    return result


def recheck_entries(entries: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """Check entries again from disk (structure and checksums, ignoring this process's memo).

    Args:
        entries: items of :func:`~brats_cggm.brats.data.cache.disk.fill_cache` (``entry``, ``case_id``).

    Returns:
        ``(entry folder, cause)`` of each entry still invalid; empty when all are valid.
    """
    problems = []
    for entry in entries:
        cause = entry_problem(entry["entry"], force=True)
        if cause is not None:
            problems.append((str(entry["entry"]), cause))
    return problems
