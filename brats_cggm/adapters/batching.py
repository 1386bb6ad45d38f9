"""Batching for the sequence tasks: padding variable-length sequences, and engine inputs from a batch.

:func:`pad_collate` pads each modality to the longest sequence of the batch and adds
``<modality>_mask`` (True = valid); :class:`MultimodalPrepareBatch` splits such a batch into
``(inputs, targets)`` for the MONAI engines.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch.utils.data._utils.collate import default_collate

from brats_cggm.adapters.errors import AdapterDataError

__all__ = ["LABEL_KEY", "MultimodalPrepareBatch", "pad_collate"]

#: The targets' key in a sample dict and a batch.
LABEL_KEY = "label"


def _pad_sequences(values: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = [v.shape[0] for v in values]
    longest = max(lengths)
    out = values[0].new_zeros((len(values), longest, *values[0].shape[1:]))
    mask = torch.zeros(len(values), longest, dtype=torch.bool)
    for i, (v, n) in enumerate(zip(values, lengths)):
        out[i, :n] = v
        mask[i, :n] = True
    return out, mask


def pad_collate(samples: Sequence[Mapping[str, Any] | None]) -> dict[str, Any]:
    """Collate sample dicts: 2-D tensors ``(L, D)`` are zero-padded to the longest ``L`` with a ``<key>_mask``.

    ``None`` samples (unreadable files skipped by a data set) are dropped; other entries go through
    PyTorch's default collate (tokenizer outputs, images, labels).

    Raises:
        AdapterDataError: when every sample was skipped, or a modality's feature sizes disagree.
    """
    kept = [s for s in samples if s is not None]
    if not kept:
        raise AdapterDataError("every sample of a batch was skipped (unreadable files; see the warnings above)")
    batch: dict[str, Any] = {}
    for key in kept[0]:
        values = [s[key] for s in kept]
        if isinstance(values[0], torch.Tensor) and values[0].ndim == 2 and key != LABEL_KEY:
            dims = {tuple(v.shape[1:]) for v in values}
            if len(dims) > 1:
                raise AdapterDataError(f"feature sizes of {key!r} disagree within a batch: {sorted(dims)}")
            batch[key], batch[f"{key}_mask"] = _pad_sequences(values)
        else:
            batch[key] = default_collate(values)
    return batch


def _to_device(value: Any, device: Any, non_blocking: bool, **kwargs: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device=device, non_blocking=non_blocking, **kwargs)
    if isinstance(value, Mapping):
        return {k: _to_device(v, device, non_blocking, **kwargs) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_to_device(v, device, non_blocking, **kwargs) for v in value)
    return value


class MultimodalPrepareBatch:
    """``prepare_batch`` for MONAI engines: a dict batch → ``(inputs dict, targets)`` on ``device``.

    Args:
        label_key: the targets' key; every other key is a network input (modalities, masks).
    """

    def __init__(self, label_key: str = LABEL_KEY) -> None:
        self.label_key = label_key

    def __call__(
        self, batchdata: Mapping[str, Any], device: Any = None, non_blocking: bool = False, **kwargs: Any
    ) -> tuple[dict[str, Any], Any]:
        """``(inputs, targets)`` on ``device``; ``kwargs`` go to ``Tensor.to``.

        Raises:
            KeyError: when the batch has no ``label_key``.
        """
        if self.label_key not in batchdata:
            raise KeyError(f"batch has no {self.label_key!r} entry (keys: {sorted(batchdata)})")
        inputs = {k: v for k, v in batchdata.items() if k != self.label_key}
        inputs = _to_device(inputs, device, non_blocking, **kwargs)
        targets = _to_device(batchdata[self.label_key], device, non_blocking, **kwargs)
        return inputs, targets
