"""ClassificationTask: metrics over an epoch of batches and the utilization ε."""

from __future__ import annotations

import pytest
import torch

from brats_cggm.adapters.task import ClassificationTask


def test_classification_task_metrics_over_batches(run_metrics):
    task = ClassificationTask(3)
    logits = torch.eye(3)[[0, 1, 2, 0]]  # argmax 0 1 2 0
    aux = torch.eye(3)[[0, 0, 0, 0]]
    labels = torch.tensor([0, 1, 1, 0])
    batches = [
        {"pred": {"pred": logits[:2], "pred_a": aux[:2]}, "label": labels[:2]},
        {"pred": {"pred": logits[2:], "pred_a": aux[2:]}, "label": labels[2:]},
    ]
    metrics = {**task.key_metric("val"), **task.additional_metrics("val", ["a"])}
    out = run_metrics(metrics, batches)
    assert out["val/accuracy"] == pytest.approx(0.75)
    assert out["val/modality_accuracy/a"] == pytest.approx(0.5)
    # class 0: tp2 -> 1; class 1: tp1 fn1 -> 2/3; class 2: fp1 -> 0 (no support)
    assert out["val/f1_macro"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert out["val/f1_weighted"] == pytest.approx((2 * 1 + 2 * 2 / 3) / 4)
    assert task.utilization(logits, labels).item() == pytest.approx(0.75)


def test_unknown_metric_names_are_refused():
    with pytest.raises(ValueError, match="unknown metrics"):
        ClassificationTask(3, metric_names=("accuracy", "auc"))
