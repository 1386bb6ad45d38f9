"""CGGM's ε granularity (``epsilon``: batch | epoch) and ``magnitude`` (docs/methods.md §1.2–1.3)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from brats_cggm.balancing.cggm import CGGMBalancer, cggm_coefficients
from brats_cggm.core.balancer import Balancer
from tests.helpers.tiny_setup import MODALITIES, make_batches, make_trainer

NEUTRAL = 0.75  # ρ(M−1)/M for ρ = 1, M = 4


def _step(
    balancer: CGGMBalancer, utilization: list[float], epoch: int, present: list[bool] | None = None
) -> list[float]:
    """One ``extra_loss`` call with the given ε (direction none reads nothing else); returns the step's B."""
    ctx = SimpleNamespace(
        utilization=torch.tensor(utilization),
        present=None if present is None else torch.tensor(present),
        epoch=epoch,
    )
    assert balancer.extra_loss(ctx) is None  # type: ignore[arg-type]
    return balancer.coefficients.tolist()


def test_epoch_granularity_holds_b_from_the_epoch_means():
    balancer = CGGMBalancer(MODALITIES, direction="none", epsilon="epoch")
    epoch1 = [[0.2, 0.4, 0.1, 0.3], [0.4, 0.2, 0.3, 0.1]]
    for eps in epoch1:  # the first epoch knows no Δε yet: neutral
        assert _step(balancer, eps, epoch=1) == pytest.approx([NEUTRAL] * 4)
    balancer.epoch_completed(1)
    mean1 = torch.tensor(epoch1).mean(0)
    expected = cggm_coefficients(mean1 - 0.0)  # ε(0) = 0, as at the first batch
    for eps in ([0.9, 0.9, 0.9, 0.9], [0.0, 0.0, 0.0, 0.0]):  # B holds through epoch 2, whatever the batches
        assert _step(balancer, eps, epoch=2) == pytest.approx(expected.tolist())
    assert balancer.scalars()["cggm/epsilon/flair"] == pytest.approx(float(mean1[0]))
    balancer.epoch_completed(2)
    torch.testing.assert_close(balancer.held_delta, torch.full((4,), 0.45) - mean1)
    assert _step(balancer, [0.5] * 4, epoch=3) == pytest.approx(cggm_coefficients(balancer.held_delta).tolist())


def test_epoch_mean_counts_only_the_steps_where_a_head_ran():
    balancer = CGGMBalancer(MODALITIES, direction="none", epsilon="epoch", clamp=False)
    _step(balancer, [0.2, 0.4, 0.1, 0.3], epoch=1)
    # t2's head did not run: its ε (NaN when no rank saw it) must not enter its mean
    _step(balancer, [0.4, 0.2, 0.3, float("nan")], epoch=1, present=[True, True, True, False])
    balancer.epoch_completed(1)
    torch.testing.assert_close(balancer.previous_epsilon, torch.tensor([0.3, 0.3, 0.2, 0.3]))


def test_epoch_granularity_smooths_the_epoch_means_with_ema():
    balancer = CGGMBalancer(MODALITIES, direction="none", epsilon="epoch", ema=0.5)
    for epoch, eps in ((1, 0.2), (2, 0.6)):
        _step(balancer, [eps] * 4, epoch=epoch)
        balancer.epoch_completed(epoch)
    # ε̃(1) = 0.2, ε̃(2) = 0.5·0.2 + 0.5·0.6
    torch.testing.assert_close(balancer.previous_epsilon, torch.full((4,), 0.4))
    torch.testing.assert_close(balancer.held_delta, torch.full((4,), 0.2))


def test_batch_granularity_ignores_the_epoch_hook():
    balancer = CGGMBalancer(MODALITIES, direction="none", clamp=False)
    first = _step(balancer, [0.2, 0.4, 0.1, 0.3], epoch=1)
    assert first == pytest.approx(cggm_coefficients(torch.tensor([0.2, 0.4, 0.1, 0.3]), clamp=False).tolist())
    balancer.epoch_completed(1)
    assert balancer.previous_epsilon.tolist() == pytest.approx([0.2, 0.4, 0.1, 0.3])
    assert balancer.epoch_count.sum() == 0


def test_epoch_state_round_trips():
    balancer = CGGMBalancer(MODALITIES, direction="none", epsilon="epoch")
    _step(balancer, [0.2, 0.4, 0.1, 0.3], epoch=1)
    balancer.epoch_completed(1)
    _step(balancer, [0.3, 0.1, 0.2, 0.6], epoch=2)  # mid-epoch: a running sum to carry over
    restored = CGGMBalancer(MODALITIES, direction="none", epsilon="epoch")
    restored.load_state_dict(balancer.state_dict())
    for key in ("epoch_sum", "epoch_count", "held_coefficients", "held_delta", "previous_epsilon"):
        torch.testing.assert_close(getattr(restored, key), getattr(balancer, key), rtol=0, atol=0)
    for b in (balancer, restored):
        _step(b, [0.5, 0.5, 0.5, 0.5], epoch=2)
        b.epoch_completed(2)
    torch.testing.assert_close(restored.held_coefficients, balancer.held_coefficients, rtol=0, atol=0)


def test_state_written_before_epsilon_existed_still_loads():
    old = CGGMBalancer(MODALITIES).state_dict()
    for key in ("epoch_sum", "epoch_count", "held_coefficients", "held_delta"):
        del old[key]
    balancer = CGGMBalancer(MODALITIES)
    balancer.load_state_dict(old)
    assert balancer.held_coefficients.tolist() == pytest.approx([NEUTRAL] * 4)


def test_bad_options():
    with pytest.raises(ValueError, match="epsilon"):
        CGGMBalancer(MODALITIES, epsilon="step")
    with pytest.raises(ValueError, match="nothing to do"):
        CGGMBalancer(MODALITIES, direction="none", magnitude=False)


def _encoder_and_head_grads(balancer: Balancer) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    trainer = make_trainer(balancer, make_batches(1), lr=0.0)
    trainer.run()
    grads = {
        n: p.grad.clone()
        for n, p in trainer.network.named_parameters()
        if n.startswith("encoders.") and p.grad is not None
    }
    return grads, trainer.network.output_layer.weight.grad.clone()


def test_without_magnitude_the_encoder_gradients_are_not_scaled_and_the_direction_term_still_acts():
    joint, joint_head = _encoder_and_head_grads(Balancer(MODALITIES))
    direction_only, direction_head = _encoder_and_head_grads(CGGMBalancer(MODALITIES, magnitude=False))
    both, _ = _encoder_and_head_grads(CGGMBalancer(MODALITIES))
    assert joint.keys() == direction_only.keys() and len(joint) > 0
    for name, grad in joint.items():  # L_gm reaches the fusion head's last layer only: encoders as in joint
        torch.testing.assert_close(direction_only[name], grad, rtol=0, atol=0)
    assert not torch.equal(direction_head, joint_head)  # λ·L_gm acted
    assert any(not torch.equal(both[n], joint[n]) for n in joint)  # with magnitude, B scales the encoders
