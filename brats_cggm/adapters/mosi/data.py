"""CMU-MOSI in the MulT pickle layout (``dataset_dir`` = the ``.pkl`` file)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from brats_cggm.adapters.data import ListDataset, MultimodalSplits, check_on_invalid, drop_or_raise
from brats_cggm.adapters.errors import AdapterDataError
from brats_cggm.adapters.mult import load_mult_pickle

__all__ = ["LABEL_RANGE", "MODALITIES", "load_mosi"]

logger = logging.getLogger(__name__)

MODALITIES = ("text", "audio", "vision")
#: Sentiment scores lie in [−3, 3].
LABEL_RANGE = (-3.0, 3.0)


def _samples(arrays: dict[str, np.ndarray], modalities: Sequence[str], labels: np.ndarray) -> list[dict]:
    return [
        {**{m: torch.from_numpy(arrays[m][i]) for m in modalities}, "label": torch.tensor(float(labels[i]))}
        for i in range(labels.shape[0])
    ]


def load_mosi(path: str | Path, modalities: Sequence[str] = MODALITIES, on_invalid: str = "error") -> MultimodalSplits:
    """Load the MOSI MulT pickle: ``train/valid/test`` → ``text``, ``audio``, ``vision``, ``labels (N, 1, 1)``.

    Feature sizes are read from the data; ``-inf`` audio values become 0.

    Args:
        path: the pickle file.
        modalities: the modalities to use, in encoder order.
        on_invalid: what to do with a label that is not finite or outside [−3, 3]: ``"error"`` or
            ``"drop"`` (the sample, with a warning naming the file and the count).

    Returns:
        The splits; samples are ``{modality: (L, D) float tensor, "label": 0-dim float tensor}``.

    Raises:
        AdapterDataError: see :func:`~brats_cggm.adapters.mult.load_mult_pickle`; invalid labels.
    """
    check_on_invalid(on_invalid)
    path = Path(path)
    splits = load_mult_pickle(path, modalities)
    datasets = {}
    info: dict = {"file": str(path), "dropped": {}}
    for split, arrays in splits.items():
        labels = arrays["labels"].astype(np.float64)
        if labels.size != labels.shape[0]:
            raise AdapterDataError(f"{path}: {split}/labels should hold one score per sample, got {labels.shape}")
        labels = labels.reshape(-1)
        bad = ~np.isfinite(labels) | (labels < LABEL_RANGE[0]) | (labels > LABEL_RANGE[1])
        keep = np.arange(labels.size)
        if bad.any():
            rows = np.nonzero(bad)[0]
            message = (
                f"{path}: {split}/labels has {rows.size} values outside [{LABEL_RANGE[0]}, {LABEL_RANGE[1]}] "
                f"(samples {rows[:10].tolist()}, values {labels[rows[:5]].tolist()})"
            )
            drop_or_raise(message, on_invalid, info["dropped"], split, int(rows.size))
            keep = np.nonzero(~bad)[0]
        arrays = {m: arrays[m][keep] for m in modalities}
        datasets[split] = ListDataset(_samples(arrays, modalities, labels[keep]))
    dims = {m: int(splits["train"][m].shape[2]) for m in modalities}
    logger.info(f"MOSI {path}: " + ", ".join(f"{s} {len(d)}" for s, d in datasets.items()) + f"; dims {dims}")
    return MultimodalSplits(
        train=datasets["train"],
        val=datasets["val"],
        test=datasets["test"],
        modalities=tuple(modalities),
        input_dims=dims,
        num_outputs=1,
        info=info,
    )
