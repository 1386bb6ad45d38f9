"""The BraTS validation metrics: their names and the Dice they compute on hand-made predictions."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine

from brats_cggm.brats.data.labels import REGIONS
from brats_cggm.brats.metrics.validation import RegionSelector, validation_key_metric, validation_metrics

MODALITIES = ("flair", "t1ce")


def _volume(*channels: list[int]) -> torch.Tensor:
    """A ``(C, 4, 1, 1)`` binary volume, one list of 4 voxels per channel."""
    return torch.tensor(channels, dtype=torch.float32).reshape(len(channels), 4, 1, 1)


# Two cases, decollated as the evaluator hands them over; per channel TC, WT, ET.
CASES = [
    {
        "label": _volume([1, 1, 0, 0], [1, 1, 1, 0], [0, 0, 0, 0]),
        "pred": _volume([1, 0, 0, 0], [1, 1, 1, 0], [0, 0, 0, 0]),  # TC 2/3, WT 1, ET both empty: 1
        "pred_flair": _volume([1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]),  # 1, 0, 1
        "pred_t1ce": _volume([0, 0, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]),  # 0, 6/7, 0 (empty reference)
    },
    {
        "label": _volume([0, 0, 0, 0], [1, 0, 0, 0], [0, 0, 1, 1]),
        "pred": _volume([0, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 1]),  # TC 1 (both empty), WT 2/3, ET 2/3
        "pred_flair": _volume([0, 0, 0, 0], [1, 0, 0, 0], [0, 0, 1, 1]),  # 1, 1, 1
        "pred_t1ce": _volume([1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]),  # 0, 0, 0
    },
]
EXPECTED_REGION = {"tc": (2 / 3 + 1) / 2, "wt": (1 + 2 / 3) / 2, "et": (1 + 2 / 3) / 2}
EXPECTED_MODALITY = {"flair": (2 + 3) / 6, "t1ce": (0 + 6 / 7 + 0 + 0) / 6}


def _evaluate(metrics: dict) -> dict:
    """Run the metrics over ``CASES`` (one batch of two) and return ``state.metrics``."""
    engine = Engine(lambda engine, batch: batch)
    for name, metric in metrics.items():
        metric.attach(engine, name)
    engine.run([CASES], max_epochs=1)
    return engine.state.metrics


def test_names():
    assert list(validation_key_metric()) == ["val/dice/mean"]
    assert list(validation_metrics()) == ["val/dice/tc", "val/dice/wt", "val/dice/et"]
    assert list(validation_metrics(MODALITIES)) == [f"val/dice/{r}" for r in REGIONS] + [
        "val/modality_dice/flair",
        "val/modality_dice/t1ce",
    ]


def test_key_metric_is_the_mean_over_regions_and_cases():
    metrics = _evaluate(validation_key_metric())
    assert metrics["val/dice/mean"] == pytest.approx(sum(EXPECTED_REGION.values()) / 3)


def test_region_and_modality_dice():
    metrics = _evaluate(validation_metrics(MODALITIES))
    for region, expected in EXPECTED_REGION.items():
        assert metrics[f"val/dice/{region}"] == pytest.approx(expected), region
    for name, expected in EXPECTED_MODALITY.items():
        assert metrics[f"val/modality_dice/{name}"] == pytest.approx(expected), name


def test_region_selector():
    preds, labels = RegionSelector(index=1)(CASES)
    assert [p.shape for p in preds] == [(1, 4, 1, 1)] * 2
    assert torch.equal(preds[0], CASES[0]["pred"][1:2]) and torch.equal(labels[1], CASES[1]["label"][1:2])
    preds, labels = RegionSelector(pred_key="pred_flair")(CASES)
    assert torch.equal(preds[1], CASES[1]["pred_flair"]) and torch.equal(labels[0], CASES[0]["label"])
