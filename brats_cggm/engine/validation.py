"""Validation helpers: predictions that come as a dict (fused + one per auxiliary head)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

from monai.config import KeysCollection
from monai.transforms import MapTransform

__all__ = ["UnpackPredictionsd"]


class UnpackPredictionsd(MapTransform):
    """Moves the entries of the dict under each key to the top level, replacing that key.

    A predictor returning ``{"pred": fused, "pred_flair": ..., ...}`` under ``"pred"`` (as a sliding
    window over a network and its auxiliary heads does) becomes top-level ``pred``, ``pred_flair``, ...
    """

    def __init__(self, keys: KeysCollection = "pred") -> None:
        super().__init__(keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            if isinstance(d[key], Mapping):
                d.update(d.pop(key))
        return d
