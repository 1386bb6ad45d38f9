"""Modality dropout (docs/methods.md §7.2): per-sample zeroing, rescaling option, never all modalities."""

from __future__ import annotations

import pytest
import torch

from brats_cggm.balancing.dropout import ModalityDropoutBalancer, dropout_masks

MODALITIES = ("flair", "t1ce", "t1", "t2")


def test_masks_rate_and_keep_one():
    torch.manual_seed(0)
    keep = dropout_masks(torch.full((4,), 0.5), 4000)
    assert 1 - keep.mean() == pytest.approx(0.5, abs=0.03)
    assert bool((keep.sum(0) >= 1).all())
    keep = dropout_masks(torch.full((3,), 0.99), 50)
    assert torch.equal(keep.sum(0), torch.ones(50))  # all would be dropped: exactly one kept


@pytest.mark.parametrize("rescale", [False, True])
def test_hook_zeroes_per_sample(rescale):
    torch.manual_seed(0)
    balancer = ModalityDropoutBalancer(MODALITIES, p=0.25, rescale=rescale)
    hook = balancer.feature_hook(1)
    features = [[torch.ones(1000, 2, 2), torch.ones(1000, 3)] for _ in MODALITIES]
    out = hook(features)
    factor = 1 / 0.75 if rescale else 1.0
    for i in range(len(MODALITIES)):
        a, b = out[i]
        torch.testing.assert_close(a[a != 0], torch.full_like(a[a != 0], factor))
        assert torch.equal(a[:, 0, 0] > 0, b[:, 0] > 0)
        assert float((a[:, 0, 0] == 0).float().mean()) == pytest.approx(0.25, abs=0.05)
    assert torch.equal(features[0][0], torch.ones(1000, 2, 2))
    assert balancer.scalars()["dropout/rate/flair"] == pytest.approx(0.25, abs=0.05)


def test_inactive_before_start():
    balancer = ModalityDropoutBalancer(MODALITIES, start_epoch=2)
    assert balancer.feature_hook(2) is None and balancer.feature_hook(3) is not None
    with pytest.raises(ValueError):
        ModalityDropoutBalancer(MODALITIES, p=1.0)


def test_state_roundtrip():
    balancer = ModalityDropoutBalancer(("a", "b"), p=0.5)
    balancer.feature_hook(1)([torch.ones(8, 2), torch.ones(8, 2)])
    restored = ModalityDropoutBalancer(("a", "b"), p=0.5)
    restored.load_state_dict(balancer.state_dict())
    assert restored.steps == 1
    torch.testing.assert_close(restored.dropped, balancer.dropped)
