"""Activity statistics (docs/methods.md §0.3): streaming summaries, kinds and an exact resume."""

from __future__ import annotations

import pytest
import torch

from brats_cggm.core.activity import ActivityStatistics
from brats_cggm.core.balancer import Balancer


def test_distribution_summary_matches_the_batch_statistics():
    values = [0.5, 1.5, 0.0, 2.0, 0.25]
    stats = ActivityStatistics()
    for v in values:
        stats.observe("cggm/B/flair", v)
    summary = stats.summary()
    reference = torch.tensor(values, dtype=torch.float64)
    assert summary["cggm/B/flair/mean"] == pytest.approx(float(reference.mean()))
    assert summary["cggm/B/flair/std"] == pytest.approx(float(reference.std(unbiased=False)))
    assert (summary["cggm/B/flair/min"], summary["cggm/B/flair/max"]) == (0.0, 2.0)


def test_fraction_total_and_value():
    stats = ActivityStatistics()
    for flag in (True, False, False, True):
        stats.flag("opm/executed", flag)
    stats.add("inforeg/window_epochs/t1", 1)
    stats.add("inforeg/window_epochs/t1", 0)
    stats.add("inforeg/window_epochs/t1", 1)
    stats.record("relearning/alpha/t1/reset1", 0.2)
    stats.record("relearning/alpha/t1/reset1", 0.3)
    assert stats.summary() == {
        "opm/executed": 0.5,
        "inforeg/window_epochs/t1": 2.0,
        "relearning/alpha/t1/reset1": 0.3,
    }


def test_a_key_keeps_its_kind():
    stats = ActivityStatistics()
    stats.observe("k", 1.0)
    with pytest.raises(ValueError, match="distribution"):
        stats.flag("k", True)


def test_resume_continues_the_same_statistics():
    values = [0.1, 0.9, 0.4, 0.7, 0.3, 0.8]
    whole = ActivityStatistics()
    first = ActivityStatistics()
    for v in values:
        whole.observe("x", v)
        whole.flag("f", v > 0.5)
    for v in values[:3]:
        first.observe("x", v)
        first.flag("f", v > 0.5)
    resumed = ActivityStatistics()
    resumed.load_state_dict(first.state_dict())
    for v in values[3:]:
        resumed.observe("x", v)
        resumed.flag("f", v > 0.5)
    assert resumed.summary() == pytest.approx(whole.summary())


def test_load_rejects_an_unknown_record_and_accepts_none():
    stats = ActivityStatistics()
    stats.load_state_dict(None)  # a checkpoint written before activity existed
    assert stats.summary() == {}
    with pytest.raises(ValueError, match="not one of"):
        stats.load_state_dict({"x": ["histogram", 1, 0.0, 0.0, 0.0, 0.0, 0.0]})


def test_joint_training_reports_no_activity():
    assert Balancer(("a", "b")).activity() == {}


def test_state_survives_a_weights_only_checkpoint(tmp_path):
    stats = ActivityStatistics()
    stats.observe("x", 0.5)
    stats.flag("f", True)
    stats.add("n", 2)
    stats.record("v", 0.1)  # its min and max stay infinite
    torch.save({"activity": stats.state_dict()}, tmp_path / "checkpoint.pt")
    restored = ActivityStatistics()
    restored.load_state_dict(torch.load(tmp_path / "checkpoint.pt", weights_only=True)["activity"])
    assert restored.summary() == stats.summary()
