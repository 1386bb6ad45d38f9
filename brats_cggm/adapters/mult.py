"""The MulT pickles (``mosi_data.pkl``, ``iemocap_data.pkl``, ... of Tsai et al., 2019).

Layout: a dict with splits ``train``, ``valid`` and ``test``; each a dict of arrays ``text (N, L, Dt)``,
``audio (N, L, Da)``, ``vision (N, L, Dv)`` and ``labels`` (MOSI: ``(N, 1, 1)`` sentiment in [−3, 3];
IEMOCAP: ``(N, 4, 2)``, a one-hot pair per emotion). As the reference loaders do, ``-inf`` audio
values are set to 0.

The file is a pickle, so it is read with a restricted unpickler that rebuilds only builtin containers and
numpy arrays, dtypes and scalars; any other global (a class, a function) is refused with the file named.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from brats_cggm.adapters.errors import AdapterDataError

__all__ = ["SAFE_PICKLE_GLOBALS", "SPLIT_NAMES", "load_mult_pickle"]

logger = logging.getLogger(__name__)

#: The globals a MulT pickle may name: numpy's array, dtype and scalar reconstruction under the module
#: names numpy 1 and numpy 2 write (``numpy.core`` and ``numpy._core``), ``_codecs.encode`` (bytes written
#: with protocol < 3 by Python 3) and a few builtin containers (``__builtin__`` is Python 2's name).
SAFE_PICKLE_GLOBALS = frozenset(
    {
        *((f"{core}.multiarray", "_reconstruct") for core in ("numpy.core", "numpy._core")),
        *((f"{core}.multiarray", "scalar") for core in ("numpy.core", "numpy._core")),
        *((f"{core}.numeric", "_frombuffer") for core in ("numpy.core", "numpy._core")),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
        ("collections", "OrderedDict"),
        *(
            (module, name)
            for module in ("builtins", "__builtin__")
            for name in ("set", "frozenset", "bytearray", "complex", "slice")
        ),
    }
)

#: Our split name → the names a pickle may use for it (the first is MulT's).
SPLIT_NAMES = {"train": ("train", "trn"), "val": ("valid", "val", "dev"), "test": ("test", "tst")}


class _ArrayUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`SAFE_PICKLE_GLOBALS`, so loading a file runs no other code."""

    def __init__(self, file, path: Path, **kwargs) -> None:
        super().__init__(file, **kwargs)
        self.path = path

    def find_class(self, module: str, name: str):
        if (module, name) not in SAFE_PICKLE_GLOBALS:
            raise AdapterDataError(
                f"{self.path}: refusing to load the global {module}.{name}; a MulT pickle holds only dicts, "
                "lists and numpy arrays (a file naming other objects could run code when loaded)"
            )
        return super().find_class(module, name)


def _read_pickle(path: Path):
    """Unpickle ``path`` with :class:`_ArrayUnpickler`; Python 2 files are retried as latin1."""
    with path.open("rb") as f:
        try:
            try:
                return _ArrayUnpickler(f, path).load()
            except UnicodeDecodeError:  # byte strings written by Python 2 (numpy array data among them)
                f.seek(0)
                return _ArrayUnpickler(f, path, encoding="latin1").load()
        except AdapterDataError:
            raise
        except Exception as exc:  # truncated or not a pickle: a bad file, reported as such
            raise AdapterDataError(f"{path}: not a readable MulT pickle ({type(exc).__name__}: {exc})") from exc


def _find_split(data: dict, split: str, path: Path) -> dict:
    for name in SPLIT_NAMES[split]:
        if name in data:
            return data[name]
    raise AdapterDataError(
        f"{path}: no {split!r} split (looked for {list(SPLIT_NAMES[split])}; the file has {sorted(map(str, data))})"
    )


def load_mult_pickle(
    path: str | Path, modalities: Sequence[str] = ("text", "audio", "vision")
) -> dict[str, dict[str, np.ndarray]]:
    """Read a MulT pickle into ``{split: {modality: (N, L, D) float32, "labels": array}}``.

    Args:
        path: the ``.pkl`` file.
        modalities: the feature keys to read, in encoder order.

    Returns:
        The three splits (``train``, ``val``, ``test``) with ``-inf`` audio set to 0.

    Raises:
        AdapterDataError: a missing, unreadable or unsafe file (one naming globals other than numpy's array
            types and builtin containers); a missing split or key; arrays that are not ``(N, L, D)``; sample counts
            or feature sizes that disagree; values that are still not finite.
    """
    path = Path(path)
    if not path.is_file():
        raise AdapterDataError(f"MulT pickle not found: {path}")
    data = _read_pickle(path)
    if not isinstance(data, dict):
        raise AdapterDataError(f"{path}: expected a dict of splits, got {type(data).__name__}")
    splits: dict[str, dict[str, np.ndarray]] = {}
    dims: dict[str, int] = {}
    for split in SPLIT_NAMES:
        raw = _find_split(data, split, path)
        out: dict[str, np.ndarray] = {}
        for key in (*modalities, "labels"):
            if key not in raw:
                raise AdapterDataError(f"{path}: split {split!r} has no {key!r} array (keys: {sorted(raw)})")
            out[key] = np.asarray(raw[key])
        n = out["labels"].shape[0]
        for m in modalities:
            arr = out[m].astype(np.float32, copy=True)
            if arr.ndim != 3:
                raise AdapterDataError(f"{path}: {split}/{m} should be (N, L, D), got shape {arr.shape}")
            if arr.shape[0] != n:
                raise AdapterDataError(f"{path}: {split}/{m} has {arr.shape[0]} samples, labels have {n}")
            if dims.setdefault(m, arr.shape[2]) != arr.shape[2]:
                raise AdapterDataError(f"{path}: {split}/{m} has feature size {arr.shape[2]}, other splits {dims[m]}")
            if m == "audio":
                arr[arr == -np.inf] = 0.0
            bad = ~np.isfinite(arr)
            if bad.any():
                rows = np.unique(np.nonzero(bad)[0])
                raise AdapterDataError(
                    f"{path}: {split}/{m} has {int(bad.sum())} non-finite values in samples {rows[:10].tolist()}"
                )
            out[m] = arr
        splits[split] = out
    return splits
