"""Training/validation splits: make one reproducibly, record a run's, read a run's back."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "SPLIT_FILE",
    "record_split",
    "recorded_split",
    "split_datalist",
    "split_of_run",
]


#: Where a training run records its data set and split (:func:`record_split`), under its ``output_dir``.
SPLIT_FILE = "configs/split.json"


def split_datalist(
    items: Sequence[dict], val_fraction: float = 0.2, seed: int = 0, num_val: int | None = None
) -> tuple[list[dict], list[dict]]:
    """Split cases into training and validation, reproducibly.

    The items are sorted by ``case_id`` and shuffled with ``seed``, so the split depends neither on the
    input order nor on anything but the case ids, the seed and the sizes.

    Args:
        items: the cases, each with a ``case_id``.
        val_fraction: fraction of cases for validation (rounded, at least one), in (0, 1).
        seed: seed of the shuffle.
        num_val: exact number of validation cases; overrides ``val_fraction``.

    Returns:
        ``(train, val)``, each sorted by case id.

    Raises:
        ValueError: if there are fewer than two items, an item has no ``case_id``, case ids repeat, or the
            sizes leave no training or no validation case.
    """
    if len(items) < 2:
        raise ValueError(f"need at least 2 cases to split into training and validation, got {len(items)}")
    missing = [i for i, item in enumerate(items) if "case_id" not in item]
    if missing:
        raise ValueError(f"items {missing[:5]} have no 'case_id'")
    ordered = sorted(items, key=lambda item: str(item["case_id"]))
    ids = [str(item["case_id"]) for item in ordered]
    if len(set(ids)) != len(ids):
        raise ValueError("case ids repeat: " + ", ".join(sorted({i for i in ids if ids.count(i) > 1})[:5]))
    n = len(ordered)
    if num_val is None:
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        num_val = min(max(1, round(n * val_fraction)), n - 1)
    elif not 1 <= num_val <= n - 1:
        raise ValueError(f"num_val must be between 1 and {n - 1} for {n} cases, got {num_val}")
    perm = np.random.default_rng(seed).permutation(n)
    val_idx = set(perm[:num_val].tolist())
    train = [item for i, item in enumerate(ordered) if i not in val_idx]
    val = [item for i, item in enumerate(ordered) if i in val_idx]
    return train, val


def record_split(
    output_dir: str | os.PathLike,
    split: tuple[Sequence[dict], Sequence[dict]],
    seed: int,
    val_fraction: float,
    dataset_dir: str | os.PathLike,
) -> Path | None:
    """Record which cases a training run trains and validates on, in ``output_dir/`` :data:`SPLIT_FILE`.

    Called from ``train.yaml``'s ``initialize``, so that the tools that read a run's validation cases
    (``brats-cggm-diagnose``, ``brats-cggm-fit-postprocessing``) find them without being told the seed.

    Args:
        output_dir: the training output folder.
        split: ``(train, val)`` datalists (:func:`split_datalist`, or the items MONAI Label gives: an item
            without ``case_id`` is recorded by the name of its first file,
            :func:`~brats_cggm.brats.data.cache.fingerprint.case_key`).
        seed: the split's seed.
        val_fraction: the split's validation share.
        dataset_dir: the data set folder (recorded as an absolute path).

    Returns:
        The file written, or None on a non-main distributed rank (which writes nothing).
    """
    from brats_cggm.brats.data.cache.fingerprint import case_key
    from brats_cggm.core.distributed import is_main_process
    from brats_cggm.core.files import write_json

    if not is_main_process():
        return None
    record = {
        "dataset_dir": str(Path(dataset_dir).resolve()),
        "seed": int(seed),
        "val_fraction": float(val_fraction),
        "training": [case_key(item) for item in split[0]],
        "validation": [case_key(item) for item in split[1]],
    }
    path = Path(output_dir) / SPLIT_FILE
    write_json(path, record)
    return path


def recorded_split(run_dir: str | os.PathLike) -> dict | None:
    """A run's :func:`record_split` record, or None for a run that has none (trained by an older version).

    Raises:
        ValueError: the file is not a split record.
    """
    path = Path(run_dir) / SPLIT_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a JSON split record ({exc})") from exc
    keys = ("dataset_dir", "seed", "val_fraction", "training", "validation")
    if not isinstance(record, dict) or any(key not in record for key in keys):
        raise ValueError(f"{path}: a split record needs the keys {', '.join(keys)}")
    return record


def split_of_run(
    run_dir: str | os.PathLike,
    items: Sequence[dict],
    seed: int | None = None,
    val_fraction: float | None = None,
) -> tuple[list[dict], list[dict]]:
    """The cases a run trained and validated on: its recorded split, else :func:`split_datalist` with the given
    ``seed`` and ``val_fraction``.

    Args:
        run_dir: the run's ``output_dir``.
        items: the data set's cases.
        seed: the run's seed; None reads it from the record. Given, it must match the record.
        val_fraction: the run's validation share; same rules.

    Returns:
        ``(train, val)``, each sorted by case id.

    Raises:
        ValueError: no record and no ``seed`` and ``val_fraction``; a given value differs from the record; a
            recorded case is not among ``items``.
    """
    record = recorded_split(run_dir)
    path = Path(run_dir) / SPLIT_FILE
    if record is None:
        if seed is None or val_fraction is None:
            raise ValueError(
                f"{run_dir} records no split ({SPLIT_FILE}): give the seed and val_fraction it trained with"
            )
        return split_datalist(items, val_fraction=val_fraction, seed=seed)
    for name, given in (("seed", seed), ("val_fraction", val_fraction)):
        if given is not None and given != record[name]:
            raise ValueError(f"{path}: the run was trained with {name} {record[name]}, not {given}")
    by_id = {str(item["case_id"]): item for item in items}
    missing = [case for case in record["training"] + record["validation"] if case not in by_id]
    if missing:
        raise ValueError(f"{path}: {len(missing)} of the run's cases are not in the data set, e.g. {missing[0]}")
    return (
        sorted((by_id[c] for c in record["training"]), key=lambda item: str(item["case_id"])),
        sorted((by_id[c] for c in record["validation"]), key=lambda item: str(item["case_id"])),
    )
