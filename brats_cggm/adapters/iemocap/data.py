"""IEMOCAP, four classes, in the two layouts its users have.

MMIN feature tree (the CGGM paper's features)::

    A/comparE.h5            one dataset per utterance name, (T, 130) frame features
    A/comparE_mean_std.h5   group "<fold>" with "mean" and "std" (D,) of the fold's training frames
    V/denseface.h5          one dataset per utterance, (T, 342)
    L/bert_large.h5         one dataset per utterance, (T, 1024)
    target/<fold>/{trn,val,tst}_label.npy      one-hot (N, 4) (or class indices (N,))
    target/<fold>/{trn,val,tst}_int2name.npy   utterance names, (N, 1) bytes

Audio is normalised with the fold's training mean/std (MMIN's ``trn`` method) by default.

MulT pickle (``iemocap_data.pkl``): splits ``train/valid/test`` with ``text``, ``audio``, ``vision``
and ``labels (N, 4, 2)`` (a one-hot pair per emotion: neutral, happy, sad, angry); the class is the
one emotion marked present.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from brats_cggm.adapters.data import H5Features, ListDataset, MultimodalSplits, check_on_invalid
from brats_cggm.adapters.errors import AdapterDataError
from brats_cggm.adapters.mult import load_mult_pickle

__all__ = [
    "MMIN_FEATURES",
    "MODALITIES",
    "MULT_CLASSES",
    "NUM_CLASSES",
    "load_iemocap",
    "load_iemocap_mmin",
    "load_iemocap_mult",
]

logger = logging.getLogger(__name__)

MODALITIES = ("text", "audio", "vision")
NUM_CLASSES = 4
MULT_CLASSES = ("neutral", "happy", "sad", "angry")
#: Our modality name → (MMIN folder, default feature file stem).
MMIN_FEATURES = {"audio": ("A", "comparE"), "vision": ("V", "denseface"), "text": ("L", "bert_large")}
MMIN_SPLITS = {"train": "trn", "val": "val", "test": "tst"}


def load_iemocap(dataset_dir: str | Path, format: str = "auto", **kwargs: Any) -> MultimodalSplits:
    """Load IEMOCAP from an MMIN feature folder or a MulT pickle.

    Args:
        dataset_dir: the MMIN feature root (with ``A/``, ``V/``, ``L/``, ``target/``) or the ``.pkl`` file.
        format: ``"mmin"``, ``"mult"`` or ``"auto"`` (a file is a MulT pickle, a folder the MMIN tree).
        kwargs: passed to :func:`load_iemocap_mmin` or :func:`load_iemocap_mult`.
    """
    path = Path(dataset_dir)
    if format == "auto":
        if not path.exists():
            raise AdapterDataError(f"IEMOCAP data not found: {path}")
        format = "mult" if path.is_file() else "mmin"
    if format == "mult":
        kwargs.pop("fold", None)
        for key in ("features", "audio_norm"):
            kwargs.pop(key, None)
        return load_iemocap_mult(path, **kwargs)
    if format == "mmin":
        return load_iemocap_mmin(path, **kwargs)
    raise ValueError(f"format must be 'auto', 'mmin' or 'mult', got {format!r}")


# --------------------------------------------------------------------------------------------- MulT


def _classes_from_labels(labels: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Class indices and a validity mask from (N,), (N, 1), one-hot (N, 4) or MulT's (N, 4, 2) labels."""
    labels = np.asarray(labels)
    if labels.ndim == 3 and labels.shape[1:] == (NUM_CLASSES, 2):
        present = labels[:, :, 1] > 0.5
        return present.argmax(1), present.sum(1) == 1
    if labels.ndim == 2 and labels.shape[1] == NUM_CLASSES:
        onehot = labels > 0.5
        return onehot.argmax(1), onehot.sum(1) == 1
    if labels.ndim == 1 or (labels.ndim == 2 and labels.shape[1] == 1):
        flat = labels.reshape(-1)
        valid = np.isfinite(flat.astype(np.float64)) & (flat == np.round(flat)) & (flat >= 0) & (flat < NUM_CLASSES)
        return np.where(valid, flat, 0).astype(np.int64), valid
    raise AdapterDataError(
        f"{where}: labels of shape {labels.shape}; expected (N,), one-hot (N, {NUM_CLASSES}) or (N, {NUM_CLASSES}, 2)"
    )


def _filter_invalid(valid: np.ndarray, where: str, on_invalid: str, info: dict, split: str) -> np.ndarray:
    if valid.all():
        return np.arange(valid.size)
    rows = np.nonzero(~valid)[0]
    message = f"{where}: {rows.size} labels are not one of the {NUM_CLASSES} classes (samples {rows[:10].tolist()})"
    if on_invalid == "error":
        raise AdapterDataError(message + "; pass on_invalid='drop' to skip them")
    warnings.warn(message + "; dropped", stacklevel=3)
    info["dropped"][split] = info["dropped"].get(split, 0) + int(rows.size)
    return np.nonzero(valid)[0]


def load_iemocap_mult(
    path: str | Path, modalities: tuple[str, ...] = MODALITIES, on_invalid: str = "error"
) -> MultimodalSplits:
    """Load MulT's ``iemocap_data.pkl`` (four classes from the ``(N, 4, 2)`` labels).

    Args:
        path: the pickle.
        modalities: modalities to use, in encoder order.
        on_invalid: a sample with no or several emotions marked: ``"error"`` or ``"drop"`` (with a warning).
    """
    check_on_invalid(on_invalid)
    path = Path(path)
    splits = load_mult_pickle(path, modalities)
    info: dict = {"file": str(path), "format": "mult", "dropped": {}}
    datasets = {}
    for split, arrays in splits.items():
        where = f"{path}: {split}/labels"
        classes, valid = _classes_from_labels(arrays["labels"], where)
        keep = _filter_invalid(valid, where, on_invalid, info, split)
        samples = [
            {**{m: torch.from_numpy(arrays[m][i]) for m in modalities}, "label": torch.tensor(int(classes[i]))}
            for i in keep
        ]
        datasets[split] = ListDataset(samples)
    dims = {m: int(splits["train"][m].shape[2]) for m in modalities}
    return MultimodalSplits(
        datasets["train"], datasets["val"], datasets["test"], modalities, dims, NUM_CLASSES, MULT_CLASSES, info=info
    )


# --------------------------------------------------------------------------------------------- MMIN


def _decode_names(array: np.ndarray) -> list[str]:
    names = []
    for x in array:
        if isinstance(x, np.ndarray):
            x = x.reshape(-1)[0]
        names.append(x.decode() if isinstance(x, bytes) else str(x))
    return names


def _load_npy(path: Path) -> np.ndarray:
    """A ``.npy`` array of numbers or byte strings; object arrays (pickles) are refused."""
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:  # object arrays, pickles and damaged files
        raise AdapterDataError(f"{path}: not a readable array of numbers or strings ({exc})") from exc


class _MminLoader:
    """Reads one utterance's features (audio normalised) into a sample dict."""

    def __init__(self, readers: Mapping[str, H5Features], audio_norm: str, mean=None, std=None) -> None:
        self.readers = dict(readers)
        self.audio_norm = audio_norm
        self.mean, self.std = mean, std

    def __call__(self, item: tuple[str, int]) -> dict[str, torch.Tensor]:
        name, label = item
        sample: dict[str, torch.Tensor] = {}
        for modality, reader in self.readers.items():
            x = reader.read(name)
            if x.ndim == 1:
                x = x[None]
            if modality == "audio" and self.audio_norm == "trn":
                x = (x - self.mean) / self.std
            elif modality == "audio" and self.audio_norm == "utt":
                std = x.std(0, ddof=1) if x.shape[0] > 1 else np.ones(x.shape[1], np.float32)
                std[std == 0] = 1.0
                x = (x - x.mean(0)) / std
            sample[modality] = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        sample["label"] = torch.tensor(label)
        return sample


def load_iemocap_mmin(
    root: str | Path,
    fold: int | str = 1,
    modalities: tuple[str, ...] = MODALITIES,
    features: Mapping[str, str] | None = None,
    audio_norm: str = "trn",
    on_invalid: str = "error",
) -> MultimodalSplits:
    """Load the MMIN IEMOCAP feature tree for one cross-validation fold.

    Every utterance's presence and feature size is checked up front (shapes only); features are read
    lazily when a sample is drawn.

    Args:
        root: the feature root.
        fold: the cross-validation fold (``target/<fold>``, and the group of the audio mean/std file).
        modalities: modalities to use, in encoder order (``text`` = L, ``audio`` = A, ``vision`` = V).
        features: feature file stems by modality (default comparE, denseface, bert_large).
        audio_norm: ``"trn"`` (the fold's training mean/std from ``A/<stem>_mean_std.h5``), ``"utt"``
            (per utterance) or ``"none"``.
        on_invalid: an utterance missing from a feature file or a label outside the four classes:
            ``"error"`` or ``"drop"`` (with a warning naming the file).

    Raises:
        AdapterDataError: a missing file, fold, split, utterance or mean/std group; a label or name file
            that is not a plain array (object arrays are pickles and are refused); feature sizes that
            disagree across utterances; invalid labels (``on_invalid="error"``).
    """
    check_on_invalid(on_invalid)
    if audio_norm not in ("trn", "utt", "none"):
        raise ValueError(f"audio_norm must be 'trn', 'utt' or 'none', got {audio_norm!r}")
    root = Path(root)
    stems = {m: MMIN_FEATURES[m][1] for m in MMIN_FEATURES}
    stems.update(features or {})
    readers: dict[str, H5Features] = {}
    for m in modalities:
        if m not in MMIN_FEATURES:
            raise ValueError(f"unknown IEMOCAP modality {m!r}; known: {sorted(MMIN_FEATURES)}")
        path = root / MMIN_FEATURES[m][0] / f"{stems[m]}.h5"
        if not path.is_file():
            raise AdapterDataError(f"IEMOCAP {m} features not found: {path}")
        readers[m] = H5Features(path)
    mean = std = None
    if "audio" in modalities and audio_norm == "trn":
        import h5py

        norm_path = root / "A" / f"{stems['audio']}_mean_std.h5"
        if not norm_path.is_file():
            raise AdapterDataError(f"audio mean/std file not found: {norm_path} (or set audio_norm to 'utt' or 'none')")
        with h5py.File(norm_path, "r") as f:
            if str(fold) not in f:
                raise AdapterDataError(f"{norm_path}: no group for fold {str(fold)!r} (groups: {sorted(f)})")
            mean = np.asarray(f[str(fold)]["mean"][()], dtype=np.float32).reshape(1, -1)
            std = np.asarray(f[str(fold)]["std"][()], dtype=np.float32).reshape(1, -1).copy()
        std[std == 0] = 1.0

    target = root / "target" / str(fold)
    info: dict = {"root": str(root), "format": "mmin", "fold": str(fold), "dropped": {}}
    dims: dict[str, int] = {}
    dim_source: dict[str, str] = {}
    datasets = {}
    for split, prefix in MMIN_SPLITS.items():
        label_path, names_path = target / f"{prefix}_label.npy", target / f"{prefix}_int2name.npy"
        for p in (label_path, names_path):
            if not p.is_file():
                raise AdapterDataError(f"IEMOCAP {split} split: {p} not found")
        names = _decode_names(_load_npy(names_path))
        classes, valid = _classes_from_labels(_load_npy(label_path), str(label_path))
        if len(names) != classes.size:
            raise AdapterDataError(f"{names_path} lists {len(names)} utterances, {label_path} {classes.size} labels")
        keep = list(_filter_invalid(valid, str(label_path), on_invalid, info, split))
        items = []
        missing: list[str] = []
        for i in keep:
            name = names[i]
            ok = True
            for m, reader in readers.items():
                shape = reader.shape(name)
                if shape is None:
                    missing.append(f"{name} (in {reader.path})")
                    ok = False
                    continue
                if len(shape) not in (1, 2):
                    raise AdapterDataError(f"{reader.path}: {name} has shape {shape}, expected (T, D)")
                d = shape[-1]
                if dims.setdefault(m, d) != d:
                    raise AdapterDataError(
                        f"{reader.path}: utterance {name} has feature size {d}, {dim_source[m]} has {dims[m]}"
                    )
                dim_source.setdefault(m, name)
            if ok:
                items.append((name, int(classes[i])))
        if missing:
            message = f"IEMOCAP {split}: {len(missing)} utterances missing from feature files: {missing[:5]}"
            if on_invalid == "error":
                raise AdapterDataError(message + "; pass on_invalid='drop' to skip them")
            warnings.warn(message + "; dropped", stacklevel=2)
            info["dropped"][split] = info["dropped"].get(split, 0) + len(missing)
        datasets[split] = ListDataset(items, loader=_MminLoader(readers, audio_norm, mean, std))
    if mean is not None and mean.shape[1] != dims.get("audio", mean.shape[1]):
        raise AdapterDataError(f"{root / 'A'}: mean/std have size {mean.shape[1]}, the audio features {dims['audio']}")
    class_names = tuple(str(i) for i in range(NUM_CLASSES))
    return MultimodalSplits(
        datasets["train"], datasets["val"], datasets["test"], modalities, dims, NUM_CLASSES, class_names, info=info
    )
