"""Validation metrics for the region outputs and the auxiliary heads."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from monai.handlers import IgniteMetricHandler, from_engine
from monai.metrics import DiceMetric

from brats_cggm.brats.data.labels import REGIONS

__all__ = ["RegionSelector", "validation_key_metric", "validation_metrics"]


class RegionSelector:
    """Output transform for ignite metrics: ``(preds, labels)`` of one region channel (all when None)."""

    def __init__(self, pred_key: str = "pred", label_key: str = "label", index: int | None = None) -> None:
        self.keys = [pred_key, label_key]
        self.index = index

    def __call__(self, output: Any) -> tuple[list, list]:
        preds, labels = from_engine(self.keys)(output)
        if self.index is None:
            return preds, labels
        i = self.index
        return [p[i : i + 1] for p in preds], [y[i : i + 1] for y in labels]


def _dice(selector: RegionSelector) -> IgniteMetricHandler:
    # ignore_empty=False: an empty reference and an empty prediction score 1 (the BraTS convention)
    metric = DiceMetric(include_background=True, reduction="mean", ignore_empty=False)
    return IgniteMetricHandler(metric_fn=metric, output_transform=selector)


def validation_key_metric() -> dict[str, IgniteMetricHandler]:
    """``val/dice/mean``: Dice averaged over the TC, WT and ET channels and the cases."""
    return {"val/dice/mean": _dice(RegionSelector())}


def validation_metrics(modalities: Sequence[str] = ()) -> dict[str, IgniteMetricHandler]:
    """``val/dice/<region>`` for each region and ``val/modality_dice/<m>`` for each auxiliary head.

    The auxiliary predictions are expected under ``pred_<modality>`` (see
    :class:`~brats_cggm.brats.model.FusedAndAuxiliaryPredictor`).
    """
    metrics = {f"val/dice/{region}": _dice(RegionSelector(index=i)) for i, region in enumerate(REGIONS)}
    for name in modalities:
        metrics[f"val/modality_dice/{name}"] = _dice(RegionSelector(pred_key=f"pred_{name}"))
    return metrics
