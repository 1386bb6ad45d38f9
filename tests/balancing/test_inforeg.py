"""InfoReg (docs/methods.md §3): window test, performance gap, α, the proximal gradient term, epoch references."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from brats_cggm.balancing.inforeg import (
    InfoRegBalancer,
    averaged_window,
    inforeg_alpha,
    layer_weight_grads,
    performance_gaps,
    prime_window,
    trace_estimate,
)

MODALITIES = ("flair", "t1ce", "t1", "t2")


class FakeNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoders = nn.ModuleList(nn.Linear(3, 2) for _ in MODALITIES)
        self.fusion = nn.Linear(2, 1)


def test_window_test():
    prev = torch.tensor([1.0, 1.0, 2.0, 0.0])
    prev2 = torch.tensor([0.9, 0.97, 2.5, 0.0])
    # relative growth 0.1, 0.03, -0.25, undefined
    assert prime_window(prev, prev2, 0.04).tolist() == [True, False, False, False]


def test_performance_gap_and_alpha():
    gaps = performance_gaps(torch.tensor([0.8, 0.5, 0.3, 0.3]))
    assert gaps.tolist() == pytest.approx([(0.3 + 0.5 + 0.5) / 3, 0.2, 0.0, 0.0])
    assert inforeg_alpha(torch.tensor([0.2]), 0.9).item() == pytest.approx(math.exp(0.9 * math.tanh(0.2)))


def test_regulates_only_sufficient_modalities_in_their_window():
    torch.manual_seed(0)
    net = FakeNet()
    balancer = InfoRegBalancer(MODALITIES, beta=0.9)
    balancer.attach(SimpleNamespace(network=net))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.5)  # θ − θ_prev = 0.5 everywhere
    balancer.window = torch.tensor([True, True, False, True])
    for p in net.parameters():
        p.grad = torch.ones_like(p)
    utilization = torch.tensor([0.8, 0.5, 0.6, 0.3])  # gaps: 0.35, 0.1, 0.2, 0
    ctx = SimpleNamespace(network=net, utilization=utilization, epoch=3)
    balancer.after_backward(ctx)
    gaps = performance_gaps(utilization)
    for name, p in net.named_parameters():
        if name.startswith("encoders.0.") or name.startswith("encoders.1."):
            i = int(name.split(".")[1])
            alpha = math.exp(0.9 * math.tanh(float(gaps[i])))
            torch.testing.assert_close(p.grad, torch.full_like(p, 1 + 0.5 * alpha))
        else:  # t1: gap > 0 but no window; t2: window but worst (gap 0); fusion: never
            torch.testing.assert_close(p.grad, torch.ones_like(p))
    assert balancer.scalars()["inforeg/alpha/t1"] == 0.0


def test_epoch_traces_open_window_and_refresh_reference():
    net = FakeNet()
    balancer = InfoRegBalancer(MODALITIES, threshold=0.04)
    balancer.attach(SimpleNamespace(network=net))
    growth = [[1.0, 1.0, 1.0, 1.0], [2.0, 1.0, 1.01, 0.5]]  # per-epoch gradient norms² (one step each)
    for epoch, squares in enumerate(growth, start=1):
        for p in net.parameters():
            p.grad = None
        for i, enc in enumerate(net.encoders):
            enc.weight.grad = torch.zeros_like(enc.weight)
            enc.weight.grad[0, 0] = math.sqrt(squares[i])
        balancer.after_backward(SimpleNamespace(network=net, utilization=torch.zeros(4), epoch=epoch))
        balancer.epoch_completed(epoch)
    # (2 - 1)/2 = 0.5 > K; 0; 0.0099 < K; negative
    assert balancer.window.tolist() == [True, False, False, False]
    assert balancer.traces[-1].tolist() == pytest.approx([2.0, 1.0, 1.01, 0.5])
    with torch.no_grad():
        net.encoders[0].weight.add_(1.0)
    balancer.epoch_completed(3)
    torch.testing.assert_close(balancer.reference[0][0], net.encoders[0].weight)
    restored = InfoRegBalancer(MODALITIES)
    restored.load_state_dict(balancer.state_dict())
    assert restored.window.tolist() == balancer.window.tolist() and len(restored.traces) == 3


def test_epoch_trace_scalars_survive_the_next_steps():
    net = FakeNet()
    balancer = InfoRegBalancer(MODALITIES)
    balancer.attach(SimpleNamespace(network=net))
    for enc in net.encoders:
        enc.weight.grad = torch.full_like(enc.weight, 0.5)  # ‖g‖² = 6 · 0.25
    balancer.after_backward(SimpleNamespace(network=net, utilization=torch.zeros(4), epoch=1))
    balancer.epoch_completed(1)
    balancer.after_backward(SimpleNamespace(network=net, utilization=torch.zeros(4), epoch=2))
    scalars = balancer.scalars()
    assert scalars["inforeg/trace/flair"] == pytest.approx(1.5)
    assert scalars["inforeg/grad_sq/t2"] == pytest.approx(1.5)
    assert all(tag.startswith("inforeg/") for tag in scalars)


def test_activity_counts_window_epochs_and_regulated_steps():
    net = FakeNet()
    balancer = InfoRegBalancer(MODALITIES, threshold=0.04)
    balancer.attach(SimpleNamespace(network=net))
    for epoch, squares in enumerate([[1.0, 1.0, 1.0, 1.0], [2.0, 1.0, 1.01, 0.5]], start=1):
        for i, enc in enumerate(net.encoders):
            enc.weight.grad = torch.zeros_like(enc.weight)
            enc.weight.grad[0, 0] = math.sqrt(squares[i])
        balancer.after_backward(SimpleNamespace(network=net, utilization=torch.zeros(4), epoch=epoch))
        balancer.epoch_completed(epoch)
    # window after epoch 2: flair only; a step of epoch 3 in which flair outperforms the others is regulated
    balancer.after_backward(SimpleNamespace(network=net, utilization=torch.tensor([0.8, 0.5, 0.3, 0.3]), epoch=3))
    activity = balancer.activity()
    assert activity["inforeg/window_epochs/flair"] == 1.0 and activity["inforeg/window_epochs/t1ce"] == 0.0
    assert activity["inforeg/regulated/flair"] == pytest.approx(1 / 3)  # one of three steps
    assert activity["inforeg/regulated/t1ce"] == 0.0  # outperforms some, but its window is closed
    assert activity["inforeg/alpha/flair/mean"] == pytest.approx(math.exp(0.9 * math.tanh((0.3 + 0.5 + 0.5) / 3)))
    restored = InfoRegBalancer(MODALITIES)
    restored.load_state_dict(balancer.state_dict())
    assert restored.activity() == activity


def test_trace_estimates_norm_and_layer_mean():
    encoder = nn.Sequential(nn.Conv3d(1, 2, 3), nn.BatchNorm3d(2), nn.Flatten(), nn.Linear(2, 3))
    for p in encoder.parameters():
        p.grad = torch.full_like(p, 0.5)
    grads = [p.grad for p in encoder.parameters()]
    total = sum(p.numel() for p in encoder.parameters())
    assert trace_estimate(grads, "norm") == pytest.approx(0.25 * total)
    weights = layer_weight_grads(encoder)  # the conv and linear weights, not the biases or the norm's
    assert [tuple(g.shape) for g in weights] == [(2, 1, 3, 3, 3), (3, 2)]
    assert trace_estimate(weights, "layer_mean") == pytest.approx(0.25 + 0.25)
    assert trace_estimate([], "layer_mean") == 0.0
    with pytest.raises(ValueError, match="trace"):
        trace_estimate(grads, "fisher")


def test_window_on_moving_averages():
    traces = [torch.tensor([v, 1.0]) for v in (1.0, 1.0, 1.0, 2.0)]
    assert averaged_window(traces[:1], 0.04) is None  # two finished epochs needed
    # n = 1: consecutive epochs, (2 − 1)/2 > K
    assert averaged_window(traces, 0.04, 1).tolist() == prime_window(traces[-1], traces[-2], 0.04).tolist()
    # n = 3: mean(1, 1, 2) = 4/3 against mean(1, 1, 1) = 1: (1/3)/(4/3) = 0.25
    assert averaged_window(traces, 0.2, 3).tolist() == [True, False]
    assert averaged_window(traces, 0.3, 3).tolist() == [False, False]
    # n larger than the history: the epochs that exist, (1 + 1 + 1 + 2)/4 against 1
    assert averaged_window(traces, 0.19, 10).tolist() == [True, False]


def test_alpha_forms_and_per_modality_beta():
    gaps = torch.tensor([0.2, 0.0])
    assert inforeg_alpha(gaps, 0.9).tolist() == pytest.approx([math.exp(0.9 * math.tanh(0.2)), 1.0])
    authors = inforeg_alpha(gaps, torch.tensor([0.95, 0.1]), "beta_exp")
    assert authors.tolist() == pytest.approx([0.95 * math.exp(math.tanh(0.2)), 0.1])
    balancer = InfoRegBalancer(("a", "v"), beta=[0.95, 0.1], alpha_form="beta_exp")
    assert balancer.beta.tolist() == pytest.approx([0.95, 0.1])
    with pytest.raises(ValueError, match="one per modality"):
        InfoRegBalancer(MODALITIES, beta=[0.95, 0.1])


def test_detach_heads_is_an_instance_override():
    assert InfoRegBalancer(MODALITIES).detach_aux_features
    balancer = InfoRegBalancer(MODALITIES, detach_heads=False)
    assert not balancer.detach_aux_features and InfoRegBalancer.detach_aux_features


def test_layer_mean_trace_drives_the_epoch_trace():
    net = FakeNet()
    balancer = InfoRegBalancer(MODALITIES, trace="layer_mean")
    balancer.attach(SimpleNamespace(network=net))
    for enc in net.encoders:
        enc.weight.grad = torch.full_like(enc.weight, 0.5)
        enc.bias.grad = torch.full_like(enc.bias, 3.0)  # a bias: not in the authors' trace
    balancer.after_backward(SimpleNamespace(network=net, utilization=torch.zeros(4), epoch=1))
    balancer.epoch_completed(1)
    assert balancer.traces[-1].tolist() == pytest.approx([0.25] * 4)
