"""Evaluation metrics of the sequence tasks: accuracy, F1, and an ignite metric over a whole epoch.

F1 is scikit-learn's (``f1_score`` with ``zero_division=0``): the MulT evaluation that the MOSI and
IEMOCAP numbers are compared with computes it with scikit-learn too, and ignite has no support-weighted
F1. Accuracy stays a NumPy comparison: scikit-learn's ``accuracy_score`` refuses empty and non-finite
inputs, and a diverged MOSI regressor (NaN scores) should score 0 in ``acc7``, not stop the evaluation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from ignite.metrics import Metric

__all__ = ["F1_AVERAGES", "PredictionMetric", "accuracy", "f1_score"]

#: The class averages :func:`f1_score` accepts.
F1_AVERAGES = ("weighted", "macro")


def accuracy(pred: np.ndarray, target: np.ndarray) -> float:
    """The fraction of equal entries of ``pred`` and ``target`` (both flattened).

    Returns:
        The accuracy in [0, 1]; 0 for empty inputs.
    """
    pred, target = np.asarray(pred).reshape(-1), np.asarray(target).reshape(-1)
    return float((pred == target).mean()) if target.size else 0.0


def f1_score(pred: np.ndarray, target: np.ndarray, average: str = "weighted") -> float:
    """F1 over the classes present in ``target`` ∪ ``pred`` (scikit-learn's, ``zero_division=0``).

    Args:
        pred: predicted class labels (any shape; flattened).
        target: true class labels, as many as ``pred``.
        average: ``"weighted"`` (mean of per-class F1 weighted by support) or ``"macro"`` (unweighted).

    Returns:
        The F1 score; 0 for empty inputs, and a class that is never right counts 0.

    Raises:
        ValueError: for another ``average``.
    """
    if average not in F1_AVERAGES:
        raise ValueError(f"average must be one of {F1_AVERAGES}, got {average!r}")
    from sklearn.metrics import f1_score as sklearn_f1_score

    pred, target = np.asarray(pred).reshape(-1), np.asarray(target).reshape(-1)
    if target.size == 0:
        return 0.0
    return float(sklearn_f1_score(target, pred, average=average, zero_division=0))


class PredictionMetric(Metric):
    """An epoch metric ``fn(predictions, targets) -> float`` over a MONAI evaluator's outputs.

    Reads ``output["pred"]`` (or ``output["pred"][pred_key]`` when the predictor returns a dict, see
    :class:`~brats_cggm.adapters.model.SequencePredictor`) and ``output["label"]`` of an evaluator run with
    ``decollate=False``; gathers them over ranks before ``fn`` is applied.

    Args:
        fn: the metric of all predictions and targets of the epoch, as NumPy arrays.
        pred_key: which prediction to score when the predictor returns a dict.
        device: where ignite keeps the metric's state.
    """

    def __init__(self, fn: Callable[[np.ndarray, np.ndarray], float], pred_key: str = "pred", device="cpu") -> None:
        self.fn = fn
        self.pred_key = pred_key
        super().__init__(output_transform=self._select, device=device)

    def _select(self, output: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        pred = output["pred"]
        return (pred[self.pred_key] if isinstance(pred, Mapping) else pred), output["label"]

    def reset(self) -> None:
        self._preds: list[torch.Tensor] = []
        self._targets: list[torch.Tensor] = []

    def update(self, output: tuple[torch.Tensor, torch.Tensor]) -> None:
        pred, target = output
        self._preds.append(pred.detach().float().cpu())
        self._targets.append(target.detach().cpu())

    def compute(self) -> float:
        import ignite.distributed as idist
        from monai.utils import evenly_divisible_all_gather

        if not self._preds:
            return float("nan")
        preds, targets = torch.cat(self._preds), torch.cat(self._targets)
        if idist.get_world_size() > 1:
            # ranks hold unequal shards (each sample is evaluated once, on one rank)
            preds = evenly_divisible_all_gather(preds, concat=True)
            targets = evenly_divisible_all_gather(targets, concat=True)
        return float(self.fn(preds.numpy(), targets.numpy()))
