"""Single-label classification as a task of the engine (IEMOCAP, Food-101): loss, utilization ε, metrics.

The tasks differ only in parameters, set by their overlays (``configs/tasks/iemocap.yaml``,
``configs/tasks/food101.yaml``): the number of classes (from the data) and the order of the metrics
(the first selects the best model).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from brats_cggm.adapters.metrics import PredictionMetric, accuracy, f1_score

__all__ = ["CLASSIFICATION_METRICS", "ClassificationTask"]


def _accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return accuracy(logits.argmax(-1), labels.reshape(-1))


def _f1_weighted(logits: np.ndarray, labels: np.ndarray) -> float:
    return f1_score(logits.argmax(-1), labels.reshape(-1), "weighted")


def _f1_macro(logits: np.ndarray, labels: np.ndarray) -> float:
    return f1_score(logits.argmax(-1), labels.reshape(-1), "macro")


#: The evaluation metrics of a classification task: ``fn(logits (N, C), labels (N,)) -> float``.
CLASSIFICATION_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": _accuracy,
    "f1_weighted": _f1_weighted,
    "f1_macro": _f1_macro,
}


class ClassificationTask:
    """Single-label classification: cross-entropy loss, ε = batch accuracy; metrics for the bundle.

    Args:
        num_classes: number of classes.
        metric_names: the evaluation metrics (keys of :data:`CLASSIFICATION_METRICS`); the first is the
            key metric. IEMOCAP keeps the default order, Food-101 reports ``f1_macro`` before ``f1_weighted``.
        label_smoothing: cross-entropy label smoothing.

    Raises:
        ValueError: for an unknown metric name.
    """

    def __init__(
        self,
        num_classes: int,
        metric_names: Sequence[str] = ("accuracy", "f1_weighted", "f1_macro"),
        label_smoothing: float = 0.0,
    ) -> None:
        unknown = [m for m in metric_names if m not in CLASSIFICATION_METRICS]
        if unknown:
            raise ValueError(f"unknown metrics {unknown}; available: {sorted(CLASSIFICATION_METRICS)}")
        self.num_classes = int(num_classes)
        self.metric_names = tuple(metric_names)
        self.label_smoothing = float(label_smoothing)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of ``logits`` ``(B, C)`` against class indices ``targets``."""
        return F.cross_entropy(logits.float(), targets.long().reshape(-1), label_smoothing=self.label_smoothing)

    def aux_targets(self, targets: torch.Tensor, aux_logits: torch.Tensor) -> torch.Tensor:
        """The auxiliary heads learn the same labels."""
        return targets

    def utilization(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """ε of one head on one batch: its accuracy."""
        return (logits.argmax(-1) == targets.long().reshape(-1)).float().mean()

    def key_metric(self, prefix: str = "val") -> dict[str, PredictionMetric]:
        """``{"<prefix>/<first metric>": metric}`` for a MONAI evaluator's ``key_val_metric``."""
        name = self.metric_names[0]
        return {f"{prefix}/{name}": PredictionMetric(CLASSIFICATION_METRICS[name])}

    def additional_metrics(self, prefix: str = "val", modalities: Sequence[str] = ()) -> dict[str, PredictionMetric]:
        """The other metrics, plus ``<prefix>/modality_accuracy/<m>`` of each auxiliary head."""
        metrics = {f"{prefix}/{n}": PredictionMetric(CLASSIFICATION_METRICS[n]) for n in self.metric_names[1:]}
        for m in modalities:
            metrics[f"{prefix}/modality_accuracy/{m}"] = PredictionMetric(_accuracy, pred_key=f"pred_{m}")
        return metrics
