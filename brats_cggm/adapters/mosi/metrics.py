"""MOSI metrics as the MulT evaluation computes them: Acc-2 (with and without zero labels), Acc-7,
weighted F1, MAE and Pearson correlation."""

from __future__ import annotations

import numpy as np

from brats_cggm.adapters.metrics import accuracy, f1_score

__all__ = ["METRIC_NAMES", "binary_accuracy", "mosi_metrics"]

METRIC_NAMES = ("acc2", "acc2_has0", "acc7", "f1", "f1_has0", "mae", "corr")


def binary_accuracy(preds: np.ndarray, truth: np.ndarray) -> float:
    """Sign agreement with zero counted as positive (``pred >= 0`` vs ``truth >= 0``); CGGM's default ε."""
    preds, truth = np.asarray(preds).reshape(-1), np.asarray(truth).reshape(-1)
    return accuracy(preds >= 0, truth >= 0)


def mosi_metrics(preds: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """All MOSI metrics of predicted scores ``preds`` against ``truth`` (both flattened).

    - ``acc2``, ``f1``: samples with ``truth != 0`` only, positive = ``> 0`` (the headline "non-zero" Acc-2).
    - ``acc2_has0``, ``f1_has0``: all samples, positive = ``>= 0``.
    - ``acc7``: both rounded (NumPy's round-half-to-even, as MulT) and clipped to [−3, 3].
    - ``mae``: mean absolute error; ``corr``: Pearson correlation (0 when either side is constant).
    F1 is weighted by class support, as scikit-learn's ``average="weighted"``.
    """
    preds = np.asarray(preds, dtype=np.float64).reshape(-1)
    truth = np.asarray(truth, dtype=np.float64).reshape(-1)
    non_zero = truth != 0
    p_nz, t_nz = preds[non_zero] > 0, truth[non_zero] > 0
    p_has0, t_has0 = preds >= 0, truth >= 0
    if preds.size > 1 and preds.std() > 0 and truth.std() > 0:
        corr = float(np.corrcoef(preds, truth)[0, 1])
    else:
        corr = 0.0
    return {
        "acc2": accuracy(p_nz, t_nz),
        "acc2_has0": accuracy(p_has0, t_has0),
        "acc7": accuracy(np.clip(np.round(preds), -3, 3), np.clip(np.round(truth), -3, 3)),
        "f1": f1_score(p_nz, t_nz, "weighted") if t_nz.size else 0.0,
        "f1_has0": f1_score(p_has0, t_has0, "weighted"),
        "mae": float(np.abs(preds - truth).mean()) if preds.size else 0.0,
        "corr": corr,
    }
