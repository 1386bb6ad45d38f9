"""OPM (docs/methods.md §2.3): drop probability, per-sample dropping of the dominant modality, rescaling."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from brats_cggm.balancing.opm import OPMBalancer, opm_drop_probabilities
from brats_cggm.brats.model import build_network
from brats_cggm.core.availability import availability_of

MODALITIES = ("flair", "t1ce", "t1", "t2")


def test_drop_probability_formula():
    q = opm_drop_probabilities(torch.tensor([3.0, 1.0, 0.4, 1.2]), q_base=0.5, lam=0.5)
    assert q.tolist() == pytest.approx([0.5 * (1 + 0.5 * math.tanh(2.0)), 0.0, 0.0, 0.5 * (1 + 0.5 * math.tanh(0.2))])


def test_scores_set_probabilities_and_warmup():
    balancer = OPMBalancer(MODALITIES, warmup_epochs=5)
    balancer.extra_loss(SimpleNamespace(utilization=torch.tensor([0.8, 0.4, 0.2, 0.2])))
    assert balancer.probabilities[0] == pytest.approx(0.5 * (1 + 0.5 * math.tanh(2.0)))
    assert balancer.probabilities[1:].tolist() == [0.0, 0.0, 0.0]
    assert balancer.fusion_mask(5, 2) is None  # still warming up
    assert OPMBalancer(MODALITIES, warmup_epochs=0, p_exe=0.0).fusion_mask(1, 2) is None


def test_fusion_mask_drops_the_dominant_modality_per_sample():
    torch.manual_seed(0)
    balancer = OPMBalancer(MODALITIES, warmup_epochs=0, p_exe=1.0)
    balancer.probabilities = torch.tensor([0.4, 0.0, 0.0, 0.0])
    batch = 4000
    mask = balancer.fusion_mask(1, batch)
    assert mask is not None and mask.shape == (batch, len(MODALITIES)) and mask.dtype == torch.bool
    assert 1 - mask[:, 0].float().mean() == pytest.approx(0.4, abs=0.03)
    assert mask[:, 1:].all()  # the others are always fused
    assert balancer.executed == 1 and balancer.scalars()["opm/executed"] == 1.0


def test_the_fusion_mask_reaches_the_fusion_and_nothing_else():
    torch.manual_seed(0)
    network = build_network("cpu", features=(4, 8)).eval()
    x = torch.randn(2, 4, 8, 8, 8)
    mask = torch.tensor([[False, True, True, True], [True, True, True, True]])
    dropped = network.forward_features(x, fusion_mask=mask)
    absent = network.forward_features(x[:1], available=availability_of([1, 2, 3], 1, 4))
    # the fused prediction is that of the modality's absence; its encoder still ran for the auxiliary head
    torch.testing.assert_close(dropped.logits[:1], absent.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(dropped.logits[1:], network.forward_features(x[1:]).logits, atol=1e-5, rtol=0)
    assert dropped.features[0][0][0].abs().sum() > 0


def test_state_roundtrip():
    balancer = OPMBalancer(MODALITIES)
    balancer.extra_loss(SimpleNamespace(utilization=torch.tensor([0.8, 0.4, 0.2, 0.2])))
    other = OPMBalancer(MODALITIES)
    other.load_state_dict(balancer.state_dict())
    torch.testing.assert_close(other.probabilities, balancer.probabilities)


def test_activity_drop_rate_q_and_dropped_fraction():
    torch.manual_seed(0)
    balancer = OPMBalancer(MODALITIES, warmup_epochs=1, p_exe=1.0)
    balancer.extra_loss(SimpleNamespace(utilization=torch.tensor([0.8, 0.4, 0.2, 0.2])))
    assert balancer.fusion_mask(1, 8) is None  # warm-up: a step that did not execute, no q recorded
    mask = balancer.fusion_mask(2, 8)
    assert mask is not None
    activity = balancer.activity()
    assert activity["opm/executed"] == 0.5  # executed steps / steps
    assert activity["opm/q/flair/mean"] == pytest.approx(float(balancer.probabilities[0]))
    assert activity["opm/q/t1ce/max"] == 0.0
    assert activity["opm/dropped/flair/mean"] == pytest.approx(1 - float(mask[:, 0].float().mean()))
    other = OPMBalancer(MODALITIES)
    other.load_state_dict(balancer.state_dict())
    assert other.activity() == activity


def test_all_dropped_exclude_leaves_empty_samples_to_the_trainer():
    torch.manual_seed(0)
    balancer = OPMBalancer(("flair", "t1ce"), warmup_epochs=0, p_exe=1.0, all_dropped="exclude")
    assert balancer.exclude_unfused and not OPMBalancer(("flair", "t1ce")).exclude_unfused
    balancer.probabilities = torch.tensor([0.9, 0.9])
    mask = balancer.fusion_mask(1, 400)
    assert mask is not None
    empty = float((~mask.any(1)).float().mean())
    assert empty == pytest.approx(0.81, abs=0.06)  # no sample is given a modality back
    assert balancer.activity()["opm/excluded/mean"] == pytest.approx(empty)
    with pytest.raises(ValueError, match="all_dropped"):
        OPMBalancer(MODALITIES, all_dropped="skip")
