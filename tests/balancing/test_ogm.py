"""OGM-GE (docs/methods.md §2.2): discrepancy ratio, coefficient, which encoder it touches, the GE noise."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from brats_cggm.balancing.ogm import OGMGEBalancer, discrepancy_ratios, ogm_coefficients
from brats_cggm.balancing.registry import create_balancer

MODALITIES = ("flair", "t1ce", "t1", "t2")


class FakeNet(nn.Module):
    def __init__(self, size: int = 8) -> None:
        super().__init__()
        self.encoders = nn.ModuleList(nn.Linear(size, size) for _ in MODALITIES)
        self.fusion = nn.Linear(size, 1)


def _net_with_grads(seed: int = 0) -> FakeNet:
    torch.manual_seed(seed)
    net = FakeNet(32)
    for p in net.parameters():
        p.grad = torch.randn_like(p)
    return net


def _ctx(net, utilization, epoch=1):
    return SimpleNamespace(network=net, utilization=torch.tensor(utilization), epoch=epoch, aux_losses=[])


def test_ratio_against_mean_and_min_of_others():
    scores = torch.tensor([0.8, 0.4, 0.2, 0.2])
    assert discrepancy_ratios(scores, "mean").tolist() == pytest.approx([3.0, 1.0, 0.2 / (1.4 / 3), 0.2 / (1.4 / 3)])
    assert discrepancy_ratios(scores, "min").tolist() == pytest.approx([4.0, 2.0, 1.0, 1.0])
    assert discrepancy_ratios(torch.tensor([0.6, 0.3])).tolist() == pytest.approx([2.0, 0.5])  # M = 2: the paper


def test_coefficient_only_for_dominant():
    k = ogm_coefficients(torch.tensor([3.0, 1.0, 0.5]), alpha=0.5)
    assert k.tolist() == pytest.approx([1 - math.tanh(1.5), 1.0, 1.0])


def test_scales_only_the_dominant_encoder():
    net = _net_with_grads()
    before = {n: p.grad.clone() for n, p in net.named_parameters()}
    balancer = OGMGEBalancer(MODALITIES, alpha=0.5, ge=False)
    ctx = _ctx(net, [0.8, 0.4, 0.2, 0.2])
    balancer.extra_loss(ctx)
    balancer.after_backward(ctx)
    k = 1 - math.tanh(0.5 * 3.0)
    for name, p in net.named_parameters():
        expected = before[name] * k if name.startswith("encoders.0.") else before[name]
        torch.testing.assert_close(p.grad, expected)
    assert balancer.scalars()["ogm_ge/k/flair"] == pytest.approx(k)
    assert balancer.scalars()["ogm_ge/ratio/flair"] == pytest.approx(3.0)


def test_ge_noise_on_every_encoder_with_gradient_std():
    net = _net_with_grads()
    before = {n: p.grad.clone() for n, p in net.named_parameters()}
    balancer = OGMGEBalancer(MODALITIES, alpha=0.5, ge=True)
    ctx = _ctx(net, [0.8, 0.4, 0.2, 0.2])
    balancer.extra_loss(ctx)
    balancer.after_backward(ctx)
    k = balancer.coefficients.tolist()
    for name, p in net.named_parameters():
        if not name.startswith("encoders."):
            torch.testing.assert_close(p.grad, before[name])  # fusion untouched
            continue
        i = int(name.split(".")[1])
        noise = p.grad - before[name] * k[i]
        assert noise.abs().sum() > 0
        if p.numel() > 100:
            assert float(noise.std()) == pytest.approx(float(before[name].std()), rel=0.25)


def test_inactive_outside_epochs_and_state_roundtrip():
    net = _net_with_grads()
    before = [p.grad.clone() for p in net.parameters()]
    balancer = OGMGEBalancer(MODALITIES, start_epoch=2, end_epoch=3)
    ctx = _ctx(net, [0.8, 0.4, 0.2, 0.2], epoch=1)
    balancer.extra_loss(ctx)
    balancer.after_backward(ctx)
    for p, b in zip(net.parameters(), before):
        torch.testing.assert_close(p.grad, b)
    assert not balancer.is_active(4) and balancer.is_active(2)
    # the noise stream continues identically after a restore
    ctx.epoch = 2
    balancer.extra_loss(ctx)
    balancer.after_backward(ctx)
    state = balancer.state_dict()
    restored = create_balancer("ogm_ge", modalities=MODALITIES, start_epoch=2, end_epoch=3)
    restored.load_state_dict(state)
    nets = [_net_with_grads(1), _net_with_grads(1)]
    for b, n in zip((balancer, restored), nets):
        c = _ctx(n, [0.8, 0.4, 0.2, 0.2], epoch=2)
        b.extra_loss(c)
        b.after_backward(c)
    for p, q in zip(*(n.parameters() for n in nets)):
        torch.testing.assert_close(p.grad, q.grad)


def test_loss_score_is_exp_minus_loss():
    balancer = OGMGEBalancer(MODALITIES, score="loss", ge=False)
    ctx = SimpleNamespace(aux_losses=[torch.tensor(v) for v in (0.1, 0.5, 1.0, 2.0)], epoch=1, present=None)
    balancer.extra_loss(ctx)
    assert balancer.scalars()["ogm_ge/score/t1"] == pytest.approx(math.exp(-1.0))


def test_a_modality_absent_from_the_step_has_no_score_and_a_neutral_ratio():
    balancer = OGMGEBalancer(MODALITIES, score="loss", ge=False)
    present = torch.tensor([True, True, False, True])
    losses = [torch.tensor(0.1), torch.tensor(0.5), torch.tensor(0.0), torch.tensor(2.0)]
    balancer.extra_loss(SimpleNamespace(aux_losses=losses, epoch=1, present=present))
    scalars = balancer.scalars()
    assert math.isnan(scalars["ogm_ge/score/t1"]) and scalars["ogm_ge/ratio/t1"] == 1.0
    # the others' reference leaves the absent modality out
    others = (math.exp(-0.5) + math.exp(-2.0)) / 2
    assert scalars["ogm_ge/ratio/flair"] == pytest.approx(math.exp(-0.1) / others)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a CUDA checkpoint resumed on a CPU-only machine")
def test_cuda_noise_state_resumes_on_cpu():
    balancer = OGMGEBalancer(MODALITIES)
    state = balancer.state_dict()
    state["generators"] = {"cuda:0": torch.Generator().get_state()}
    balancer.load_state_dict(state)
    assert balancer._generators == {}  # reseeded from seed + steps on first use


def test_activity_counts_the_modulated_steps_only():
    balancer = OGMGEBalancer(MODALITIES, alpha=0.5, start_epoch=2)
    net = _net_with_grads()
    balancer.extra_loss(_ctx(net, [0.8, 0.4, 0.2, 0.2], epoch=1))  # not modulated yet: no activity
    assert balancer.activity() == {}
    balancer.extra_loss(_ctx(net, [0.8, 0.4, 0.2, 0.2], epoch=2))
    balancer.extra_loss(_ctx(net, [0.2, 0.4, 0.2, 0.8], epoch=2))
    activity = balancer.activity()
    k_flair = 1 - math.tanh(0.5 * 3.0)
    assert activity["ogm_ge/k/flair/mean"] == pytest.approx((k_flair + 1.0) / 2)
    assert activity["ogm_ge/k/flair/min"] == pytest.approx(k_flair)
    assert activity["ogm_ge/throttled/flair"] == 0.5 and activity["ogm_ge/throttled/t1"] == 0.0
    other = OGMGEBalancer(MODALITIES)
    other.load_state_dict(balancer.state_dict())
    assert other.activity() == activity
