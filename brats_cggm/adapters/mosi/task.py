"""MOSI as a task of the engine: L1 regression; ε = binary accuracy (default) or −MAE."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from brats_cggm.adapters.metrics import PredictionMetric
from brats_cggm.adapters.mosi.metrics import METRIC_NAMES, binary_accuracy, mosi_metrics

__all__ = ["UTILIZATIONS", "MosiRegressionTask"]

UTILIZATIONS = ("binary_accuracy", "neg_mae")


def _metric(name: str):
    return lambda p, t: mosi_metrics(p, t)[name]


class MosiRegressionTask:
    """Sentiment regression with an L1 loss.

    Args:
        utilization: CGGM's ε per auxiliary head and batch: ``"binary_accuracy"`` (the authors' code;
            sign agreement, zero counted positive) or ``"neg_mae"`` (the paper's MAE, negated so that
            higher is better).
        key_metric: the evaluation metric that selects the best model (one of ``METRIC_NAMES``; ``mae``
            is reported as is, so pick a higher-is-better one).
    """

    def __init__(self, utilization: str = "binary_accuracy", key_metric: str = "acc2") -> None:
        if utilization not in UTILIZATIONS:
            raise ValueError(f"utilization must be one of {UTILIZATIONS}, got {utilization!r}")
        if key_metric not in METRIC_NAMES or key_metric == "mae":
            raise ValueError(f"key_metric must be one of {[m for m in METRIC_NAMES if m != 'mae']}")
        self.utilization_name = utilization
        self.key_metric_name = key_metric

    @property
    def utilization_tag(self) -> str:
        """TensorBoard prefix of ε: ``train/modality_accuracy`` or ``train/modality_neg_mae``."""
        return "train/modality_accuracy" if self.utilization_name == "binary_accuracy" else "train/modality_neg_mae"

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.l1_loss(logits.float().reshape(-1), targets.float().reshape(-1))

    def aux_targets(self, targets: torch.Tensor, aux_logits: torch.Tensor) -> torch.Tensor:
        return targets

    def utilization(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        pred, target = logits.reshape(-1), targets.float().reshape(-1)
        if self.utilization_name == "binary_accuracy":
            return ((pred >= 0) == (target >= 0)).float().mean()
        return -(pred - target).abs().mean()

    def key_metric(self, prefix: str = "val") -> dict[str, PredictionMetric]:
        return {f"{prefix}/{self.key_metric_name}": PredictionMetric(_metric(self.key_metric_name))}

    def additional_metrics(self, prefix: str = "val", modalities: Sequence[str] = ()) -> dict[str, PredictionMetric]:
        """The other MOSI metrics and, per auxiliary head, ``modality_accuracy`` (binary, zero positive)
        and ``modality_mae``."""
        metrics = {f"{prefix}/{n}": PredictionMetric(_metric(n)) for n in METRIC_NAMES if n != self.key_metric_name}
        for m in modalities:
            metrics[f"{prefix}/modality_accuracy/{m}"] = PredictionMetric(binary_accuracy, pred_key=f"pred_{m}")
            metrics[f"{prefix}/modality_mae/{m}"] = PredictionMetric(
                lambda p, t: float(np.abs(p.reshape(-1) - t.reshape(-1)).mean()), pred_key=f"pred_{m}"
            )
        return metrics
