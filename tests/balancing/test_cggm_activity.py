"""CGGM's activity statistics (docs/methods.md §0.3): B per modality, the neutral value and the clamp."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from brats_cggm.balancing.cggm import CGGMBalancer

MODALITIES = ("flair", "t1ce")


def _step(balancer: CGGMBalancer, utilization: list[float], epoch: int = 1) -> None:
    # direction "none": extra_loss reads only ε and the epoch
    balancer.extra_loss(SimpleNamespace(utilization=torch.tensor(utilization), epoch=epoch))


def test_activity_of_modulated_steps():
    balancer = CGGMBalancer(MODALITIES, direction="none", start_epoch=1)
    _step(balancer, [0.1, 0.1], epoch=1)  # not modulated: no activity
    assert balancer.activity() == {}
    _step(balancer, [0.2, 0.4], epoch=2)  # Δ = (0.1, 0.3): B = (0.75, 0.25)
    _step(balancer, [0.2, 0.4], epoch=2)  # Δ = 0: |S| < s_min, neutral B = 0.5
    _step(balancer, [0.7, 0.0], epoch=2)  # Δ = (0.5, −0.4): raw B = (−4, 5), clamped to (0, 1)
    activity = balancer.activity()
    assert activity["cggm/neutral"] == pytest.approx(1 / 3)
    assert activity["cggm/B/flair/mean"] == pytest.approx((0.75 + 0.5 + 0.0) / 3)
    assert (activity["cggm/B/flair/min"], activity["cggm/B/t1ce/max"]) == pytest.approx((0.0, 1.0))
    assert activity["cggm/clamped/flair"] == pytest.approx(1 / 3)
    assert activity["cggm/clamped/t1ce"] == pytest.approx(1 / 3)


def test_activity_resumes_exactly():
    balancer = CGGMBalancer(MODALITIES, direction="none")
    _step(balancer, [0.2, 0.4])
    resumed = CGGMBalancer(MODALITIES, direction="none")
    resumed.load_state_dict(balancer.state_dict())
    for b in (balancer, resumed):
        _step(b, [0.3, 0.45])
    assert resumed.activity() == balancer.activity()
