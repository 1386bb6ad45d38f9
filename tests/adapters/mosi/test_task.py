"""MosiRegressionTask: L1 loss, both utilizations, metrics over an epoch of batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from brats_cggm.adapters.mosi import MosiRegressionTask


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


def test_mosi_task_metrics_over_batches_match_the_whole_epoch(run_metrics):
    truth = torch.tensor([2.0, -1.0, 0.0, 0.4, -2.6, 3.0])
    fused = torch.tensor([1.4, 0.5, -0.2, 0.6, -3.4, 2.5]).unsqueeze(1)
    text = torch.tensor([-1.0, -1.0, 1.0, 1.0, 1.0, 1.0]).unsqueeze(1)
    batches = [
        {"pred": {"pred": fused[i : i + 3], "pred_text": text[i : i + 3]}, "label": truth[i : i + 3]} for i in (0, 3)
    ]
    task = MosiRegressionTask(key_metric="acc7")
    out = run_metrics({**task.key_metric("test"), **task.additional_metrics("test", ["text"])}, batches)
    assert out["test/acc7"] == pytest.approx(2 / 6) and out["test/acc2"] == pytest.approx(0.8)
    assert out["test/mae"] == pytest.approx(np.mean([0.6, 1.5, 0.2, 0.2, 0.8, 0.5]))
    # text head, zero counted positive: truth>=0 [T,F,T,T,F,T], pred>=0 [F,F,T,T,T,T] -> 4/6
    assert out["test/modality_accuracy/text"] == pytest.approx(4 / 6)
    assert out["test/modality_mae/text"] == pytest.approx(np.mean([3.0, 0.0, 1.0, 0.6, 3.6, 2.0]))
    with pytest.raises(ValueError, match="key_metric"):
        MosiRegressionTask(key_metric="mae")
