"""OPM (docs/methods.md §2.3): drop probability, per-sample dropping of the dominant modality, rescaling."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from brats_cggm.balancing.opm import OPMBalancer, opm_drop_probabilities

MODALITIES = ("flair", "t1ce", "t1", "t2")


def test_drop_probability_formula():
    q = opm_drop_probabilities(torch.tensor([3.0, 1.0, 0.4, 1.2]), q_base=0.5, lam=0.5)
    assert q.tolist() == pytest.approx([0.5 * (1 + 0.5 * math.tanh(2.0)), 0.0, 0.0, 0.5 * (1 + 0.5 * math.tanh(0.2))])


def test_scores_set_probabilities_and_warmup():
    balancer = OPMBalancer(MODALITIES, warmup_epochs=5)
    balancer.extra_loss(SimpleNamespace(utilization=torch.tensor([0.8, 0.4, 0.2, 0.2])))
    assert balancer.probabilities[0] == pytest.approx(0.5 * (1 + 0.5 * math.tanh(2.0)))
    assert balancer.probabilities[1:].tolist() == [0.0, 0.0, 0.0]
    assert balancer.feature_hook(5) is None  # still warming up
    assert OPMBalancer(MODALITIES, warmup_epochs=0, p_exe=0.0).feature_hook(1) is None


def test_hook_drops_dominant_per_sample_and_rescales():
    torch.manual_seed(0)
    balancer = OPMBalancer(MODALITIES, warmup_epochs=0, p_exe=1.0)
    balancer.probabilities = torch.tensor([0.4, 0.0, 0.0, 0.0])
    hook = balancer.feature_hook(1)
    assert hook is not None
    batch = 4000
    features = [[torch.ones(batch, 2, 3), torch.ones(batch, 4)] for _ in MODALITIES]
    out = hook(features)
    level0, level1 = out[0]
    kept = level0[:, 0, 0] > 0
    torch.testing.assert_close(level0[kept], torch.full_like(level0[kept], 1 / 0.6))  # kept ones rescaled by 1/(1-q)
    assert level0[~kept].eq(0).all()
    assert torch.equal(level1[:, 0] > 0, kept)  # one mask per sample for all levels
    assert 1 - kept.float().mean() == pytest.approx(0.4, abs=0.03)
    assert float(level0.mean()) == pytest.approx(1.0, abs=0.06)  # unbiased in expectation
    for i in (1, 2, 3):  # the others untouched
        assert all(torch.equal(a, b) for a, b in zip(out[i], features[i]))
    assert torch.equal(features[0][0], torch.ones(batch, 2, 3))  # inputs not edited in place


def test_state_roundtrip():
    balancer = OPMBalancer(MODALITIES)
    balancer.extra_loss(SimpleNamespace(utilization=torch.tensor([0.8, 0.4, 0.2, 0.2])))
    other = OPMBalancer(MODALITIES)
    other.load_state_dict(balancer.state_dict())
    torch.testing.assert_close(other.probabilities, balancer.probabilities)
