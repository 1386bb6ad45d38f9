"""What the task readers return and read with: feature files, data sets and the split container.

A task's loader (``load_mosi``, ``load_iemocap``, ``load_food101``) returns a :class:`MultimodalSplits`
whose data sets yield dicts ``{modality: (L, D) features, "label": ...}``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from brats_cggm.adapters.batching import pad_collate
from brats_cggm.adapters.errors import AdapterDataError
from brats_cggm.core.files import to_jsonable

__all__ = ["ON_INVALID", "H5Features", "ListDataset", "MultimodalSplits", "check_on_invalid", "drop_or_raise"]


def _size(dataset: Dataset) -> int:
    """The number of samples of a data set (every data set of a split has a length)."""
    if not isinstance(dataset, Sized):
        raise TypeError(f"{type(dataset).__name__} has no length.")
    return len(dataset)


#: What a loader may do with an invalid sample: stop with an error, or drop it with a warning.
ON_INVALID = ("error", "drop")


def check_on_invalid(on_invalid: str) -> str:
    """``on_invalid``, checked to be one of :data:`ON_INVALID`.

    Raises:
        ValueError: for any other value.
    """
    if on_invalid not in ON_INVALID:
        raise ValueError(f"on_invalid must be one of {ON_INVALID}, got {on_invalid!r}")
    return on_invalid


def drop_or_raise(
    message: str, on_invalid: str, dropped: dict[str, int], split: str, count: int, stacklevel: int = 2
) -> None:
    """Handles ``count`` invalid samples of ``split`` as ``on_invalid`` says: an error, or a warning and a count.

    Args:
        message: what is wrong, naming the file.
        on_invalid: ``"error"`` or ``"drop"`` (the caller drops the samples).
        dropped: dropped samples per split (a loader's ``info["dropped"]``); ``count`` is added to ``split``.
        split: the split the samples belong to.
        count: how many samples are invalid.
        stacklevel: the warning's stack level as the caller would give it to ``warnings.warn``.

    Raises:
        AdapterDataError: when ``on_invalid`` is ``"error"``; the message says how to drop the samples instead.
    """
    if on_invalid == "error":
        raise AdapterDataError(message + "; pass on_invalid='drop' to skip them")
    warnings.warn(message + "; dropped", stacklevel=stacklevel + 1)
    dropped[split] = dropped.get(split, 0) + count


class H5Features:
    """Lazy reads of one feature file holding an HDF5 dataset per sample (re-opened in each worker process).

    Args:
        path: the ``.h5`` file.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: Any = None
        self._pid: int | None = None

    def file(self) -> Any:
        """The open ``h5py.File`` of this process."""
        import h5py

        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._file

    def __getstate__(self) -> dict:
        return {"path": self.path, "_file": None, "_pid": None}

    def shape(self, name: str) -> tuple[int, ...] | None:
        """The shape of dataset ``name``, or None if the file has none of that name."""
        item = self.file().get(name)
        return None if item is None else tuple(item.shape)

    def read(self, name: str) -> np.ndarray:
        """Dataset ``name`` as float32."""
        return np.asarray(self.file()[name][()], dtype=np.float32)


class ListDataset(Dataset):
    """A map-style data set over a list of sample dicts, or over a loader ``fn(index)``."""

    def __init__(self, samples: Sequence[Any], loader: Callable[[Any], Any] | None = None) -> None:
        self.samples = list(samples)
        self.loader = loader

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Any:
        item = self.samples[index]
        return self.loader(item) if self.loader is not None else item


@dataclass
class MultimodalSplits:
    """What a task's loader returns: the three splits and what the network needs to know about them.

    Attributes:
        train, val, test: the data sets (items: dicts of per-modality features and ``"label"``).
        modalities: modality names, in encoder order.
        input_dims: feature size of each modality (from the data).
        num_outputs: the width of the prediction (classes, or 1 for regression).
        class_names: the class names (classification), index = label.
        collate_fn: the data loaders' collate function.
        info: anything else worth reporting (file names, counts of dropped samples).
    """

    train: Dataset
    val: Dataset
    test: Dataset
    modalities: tuple[str, ...]
    input_dims: dict[str, int]
    num_outputs: int
    class_names: tuple[str, ...] = ()
    collate_fn: Callable = field(default=None)  # type: ignore[assignment]
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.modalities = tuple(self.modalities)
        if self.collate_fn is None:
            self.collate_fn = pad_collate

    def __getitem__(self, split: str) -> Dataset:
        return {"train": self.train, "val": self.val, "test": self.test}[split]

    def report(self) -> dict[str, Any]:
        """What ``metrics.json`` records about the data: split sizes and ``info`` (callables called now).

        Returns:
            ``{"sizes": {split: samples}, **info}`` with values that JSON can hold (others as text).
        """
        info = {k: (v() if callable(v) else v) for k, v in self.info.items()}
        sizes = {"train": _size(self.train), "val": _size(self.val), "test": _size(self.test)}
        return {"sizes": sizes, **{k: to_jsonable(v) for k, v in info.items()}}
