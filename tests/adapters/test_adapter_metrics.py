"""Metrics against hand-computed values on fixed predictions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ignite.engine import Engine

from brats_cggm.adapters.common import ClassificationTask, accuracy, f1_score
from brats_cggm.adapters.mosi import MosiRegressionTask, mosi_metrics


def test_mosi_metrics_hand_computed():
    truth = np.array([2.0, -1.0, 0.0, 0.4, -2.6, 3.0])
    preds = np.array([1.4, 0.5, -0.2, 0.6, -3.4, 2.5])
    m = mosi_metrics(preds, truth)
    # non-zero truth: indices 0,1,3,4,5 -> truth>0 [T,F,T,F,T], pred>0 [T,T,T,F,T] -> 4/5 right
    assert m["acc2"] == pytest.approx(0.8)
    # has0: truth>=0 [T,F,T,T,F,T], pred>=0 [T,T,F,T,F,T] -> 4/6
    assert m["acc2_has0"] == pytest.approx(4 / 6)
    # rounded+clipped: truth [2,-1,0,0,-3,3], preds [1,0,-0,1,-3,2] -> equal at 2 (0 == -0), 4 -> 2/6
    assert m["acc7"] == pytest.approx(2 / 6)
    assert m["mae"] == pytest.approx(np.mean([0.6, 1.5, 0.2, 0.2, 0.8, 0.5]))
    assert m["corr"] == pytest.approx(np.corrcoef(preds, truth)[0, 1])
    # F1 non-zero: classes True (support 3): tp 3, fp 1, fn 0 -> 6/7; False (support 2): tp 1, fp 0, fn 1 -> 2/3
    assert m["f1"] == pytest.approx((3 * 6 / 7 + 2 * 2 / 3) / 5)
    # F1 has0: True (support 4): tp 3, fp 1, fn 1 -> 0.75; False (support 2): tp 1, fp 1, fn 1 -> 0.5
    assert m["f1_has0"] == pytest.approx((4 * 0.75 + 2 * 0.5) / 6)


def test_f1_and_accuracy_hand_computed():
    target = np.array([0, 0, 1, 1, 2, 2, 2])
    pred = np.array([0, 1, 1, 1, 2, 0, 2])
    assert accuracy(pred, target) == pytest.approx(5 / 7)
    # class 0: tp1 fp1 fn1 -> 0.5; class 1: tp2 fp1 fn0 -> 0.8; class 2: tp2 fp0 fn1 -> 0.8
    assert f1_score(pred, target, "macro") == pytest.approx((0.5 + 0.8 + 0.8) / 3)
    assert f1_score(pred, target, "weighted") == pytest.approx((2 * 0.5 + 2 * 0.8 + 3 * 0.8) / 7)


def test_f1_matches_scikit_learn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    target, pred = rng.integers(0, 5, 50), rng.integers(0, 6, 50)
    for average in ("macro", "weighted"):
        expected = sklearn_metrics.f1_score(target, pred, average=average, zero_division=0)
        assert f1_score(pred, target, average) == pytest.approx(expected)


def _run_metrics(metrics: dict, batches: list[dict]) -> dict:
    engine = Engine(lambda e, b: b)
    for name, metric in metrics.items():
        metric.attach(engine, name)
    return engine.run(batches, max_epochs=1).metrics


def test_classification_task_metrics_over_batches():
    task = ClassificationTask(3)
    logits = torch.eye(3)[[0, 1, 2, 0]]  # argmax 0 1 2 0
    aux = torch.eye(3)[[0, 0, 0, 0]]
    labels = torch.tensor([0, 1, 1, 0])
    batches = [
        {"pred": {"pred": logits[:2], "pred_a": aux[:2]}, "label": labels[:2]},
        {"pred": {"pred": logits[2:], "pred_a": aux[2:]}, "label": labels[2:]},
    ]
    metrics = {**task.key_metric("val"), **task.additional_metrics("val", ["a"])}
    out = _run_metrics(metrics, batches)
    assert out["val/accuracy"] == pytest.approx(0.75)
    assert out["val/modality_accuracy/a"] == pytest.approx(0.5)
    # class 0: tp2 -> 1; class 1: tp1 fn1 -> 2/3; class 2: fp1 -> 0 (no support)
    assert out["val/f1_macro"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert out["val/f1_weighted"] == pytest.approx((2 * 1 + 2 * 2 / 3) / 4)
    assert task.utilization(logits, labels).item() == pytest.approx(0.75)


def test_mosi_task_loss_and_utilization():
    logits, targets = torch.tensor([[1.0], [-0.5], [0.0]]), torch.tensor([2.0, 0.5, -1.0])
    task = MosiRegressionTask()
    assert task.loss(logits, targets).item() == pytest.approx((1.0 + 1.0 + 1.0) / 3)
    assert task.utilization(logits, targets).item() == pytest.approx(1 / 3)
    neg = MosiRegressionTask(utilization="neg_mae")
    assert neg.utilization(logits, targets).item() == pytest.approx(-1.0)
    assert neg.utilization_tag == "train/modality_neg_mae"
    with pytest.raises(ValueError, match="utilization"):
        MosiRegressionTask(utilization="mse")


def test_mosi_task_metrics_over_batches_match_the_whole_epoch():
    truth = torch.tensor([2.0, -1.0, 0.0, 0.4, -2.6, 3.0])
    fused = torch.tensor([1.4, 0.5, -0.2, 0.6, -3.4, 2.5]).unsqueeze(1)
    text = torch.tensor([-1.0, -1.0, 1.0, 1.0, 1.0, 1.0]).unsqueeze(1)
    batches = [
        {"pred": {"pred": fused[i : i + 3], "pred_text": text[i : i + 3]}, "label": truth[i : i + 3]} for i in (0, 3)
    ]
    task = MosiRegressionTask(key_metric="acc7")
    out = _run_metrics({**task.key_metric("test"), **task.additional_metrics("test", ["text"])}, batches)
    assert out["test/acc7"] == pytest.approx(2 / 6) and out["test/acc2"] == pytest.approx(0.8)
    assert out["test/mae"] == pytest.approx(np.mean([0.6, 1.5, 0.2, 0.2, 0.8, 0.5]))
    # text head, zero counted positive: truth>=0 [T,F,T,T,F,T], pred>=0 [F,F,T,T,T,T] -> 4/6
    assert out["test/modality_accuracy/text"] == pytest.approx(4 / 6)
    assert out["test/modality_mae/text"] == pytest.approx(np.mean([3.0, 0.0, 1.0, 0.6, 3.6, 2.0]))
    with pytest.raises(ValueError, match="key_metric"):
        MosiRegressionTask(key_metric="mae")
