"""MMPareto (docs/methods.md §5): min-norm weights on conflict, rescaling, γ, and what backward changes."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from brats_cggm.balancing.mmpareto import MMParetoBalancer, mmpareto_combine, pareto_weights


def test_conflict_gives_min_norm_weights():
    g_mm, g_uni = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])
    c_mm, c_uni, cos = pareto_weights(g_mm, g_uni)
    assert cos < 0
    # ((g_uni − g_mm)·g_uni) / ‖g_mm − g_uni‖² = ((-2)(-1) + 1·1) / (4 + 1) = 0.6
    assert (c_mm, c_uni) == pytest.approx((0.6, 0.4))
    combined = c_mm * g_mm + c_uni * g_uni  # the min-norm point: equal projections on both gradients
    assert float(combined @ g_mm) == pytest.approx(float(combined @ g_uni))


def test_agreement_gives_equal_weights_and_gamma():
    g_mm, g_uni = torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0])
    c_mm, c_uni, _ = pareto_weights(g_mm, g_uni)
    assert (c_mm, c_uni) == (0.5, 0.5)
    torch.testing.assert_close(mmpareto_combine(g_mm, g_uni, c_mm, c_uni, 1.5), 1.5 * (g_mm + g_uni))


def test_rescale_to_summed_norm_when_larger():
    g_mm, g_uni = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])
    new = mmpareto_combine(g_mm, g_uni, 0.6, 0.4, gamma=1.5)
    raw = 2 * (0.6 * g_mm + 0.4 * g_uni)  # [0.4, 0.8], norm 0.894 < ‖[0, 1]‖ = 1
    torch.testing.assert_close(new, raw / raw.norm() * 1.0 * 1.5)
    big = mmpareto_combine(torch.tensor([3.0]), torch.tensor([-1.0]), 1.0, 0.0, gamma=1.0)
    torch.testing.assert_close(big, torch.tensor([6.0]))  # ‖2·g_mm‖ = 6 > ‖sum‖ = 2: kept


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoders = nn.ModuleList(nn.Linear(3, 2) for _ in range(2))
        self.head = nn.Linear(4, 1)


def test_backward_edits_encoders_only():
    torch.manual_seed(0)
    net, aux = Toy(), nn.ModuleList(nn.Linear(2, 1) for _ in range(2))
    x = torch.randn(5, 2, 3)
    feats = [enc(x[:, i]) for i, enc in enumerate(net.encoders)]
    task_loss = net.head(torch.cat(feats, 1)).pow(2).mean()
    aux_losses = [(aux[i](feats[i]) - 1).pow(2).mean() for i in range(2)]  # through the encoders
    loss = task_loss + sum(aux_losses)
    params = list(net.parameters()) + list(aux.parameters())
    g_mm = torch.autograd.grad(task_loss, params, retain_graph=True, allow_unused=True)
    g_all = torch.autograd.grad(loss, params, retain_graph=True)
    balancer = MMParetoBalancer(("a", "b"), gamma=1.5)
    assert balancer.detach_aux_features is False
    balancer.backward(SimpleNamespace(network=net, task_loss=task_loss, aux_losses=aux_losses), loss)
    for idx, (p, gm, ga) in enumerate(zip(params, g_mm, g_all)):
        if idx < 4:  # encoder parameters (2 encoders × weight, bias)
            i = idx // 2
            enc = list(net.encoders[i].parameters())
            mm = torch.cat([g.flatten() for g in g_mm[2 * i : 2 * i + 2]])
            uni = torch.cat([(a - m).flatten() for a, m in zip(g_all[2 * i : 2 * i + 2], g_mm[2 * i : 2 * i + 2])])
            c_mm, c_uni, _ = pareto_weights(mm, uni)
            expected = mmpareto_combine(gm, ga - gm, c_mm, c_uni, 1.5)
            assert p is enc[idx % 2]
            torch.testing.assert_close(p.grad, expected)
        else:  # fusion head and auxiliary heads keep their plain gradients
            torch.testing.assert_close(p.grad, ga)
    assert set(balancer.scalars()) >= {"mmpareto/cos/a", "mmpareto/c_mm/b", "mmpareto/conflict/a"}
    # activity (docs/methods.md §0.3): one step's conflict flag and fused weight per encoder
    activity = balancer.activity()
    for name in ("a", "b"):
        scalars = balancer.scalars()
        assert activity[f"mmpareto/conflict/{name}"] == scalars[f"mmpareto/conflict/{name}"]
        assert activity[f"mmpareto/c_mm/{name}/mean"] == pytest.approx(scalars[f"mmpareto/c_mm/{name}"])
    restored = MMParetoBalancer(("a", "b"))
    restored.load_state_dict(balancer.state_dict())
    assert restored.activity() == activity


def test_state_roundtrip():
    balancer = MMParetoBalancer(("a", "b"))
    balancer.conflicts = torch.tensor([3.0, 1.0])
    balancer.steps = 7
    restored = MMParetoBalancer(("a", "b"))
    restored.load_state_dict(balancer.state_dict())
    assert restored.steps == 7 and restored.conflicts.tolist() == [3.0, 1.0]
