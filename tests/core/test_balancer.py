"""The Balancer base class is plain joint training: every hook a no-op, backward a plain backward."""

from __future__ import annotations

import torch
from torch import nn

from brats_cggm.core.balancer import Balancer


class TwoEncoders(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoders = nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 2)])


def test_defaults_are_joint_training():
    balancer = Balancer(["a", "b"])
    assert balancer.name == "joint" and balancer.detach_aux_features is True
    assert balancer.modalities == ("a", "b") and repr(balancer) == "Balancer(modalities=('a', 'b'))"
    assert balancer.fusion_mask(1, 2) is None
    assert balancer.extra_loss(None) is None
    assert balancer.after_backward(None) is None and balancer.epoch_completed(1) is None
    assert balancer.scalars() == {} and balancer.state_dict() == {}
    balancer.load_state_dict({})
    assert Balancer.short_run_kwargs(3) == {}


def test_backward_is_a_plain_backward():
    w = torch.ones(3, requires_grad=True)
    Balancer().backward(None, (2 * w).sum())
    torch.testing.assert_close(w.grad, torch.full((3,), 2.0))


def test_encoder_parameters_are_those_with_a_gradient():
    network = TwoEncoders()
    network.encoders[1](torch.ones(1, 2)).sum().backward()
    balancer = Balancer(["a", "b"])
    assert balancer.encoder_parameters(network, 0) == []
    assert balancer.encoder_parameters(network, 1) == list(network.encoders[1].parameters())
