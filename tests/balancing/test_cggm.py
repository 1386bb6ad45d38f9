"""CGGM pinned to docs/methods.md §1: coefficients, which gradients change, L_gm and its two modes."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Events

from brats_cggm.balancing.cggm import CGGMBalancer, cggm_coefficients
from brats_cggm.balancing.registry import create_balancer
from brats_cggm.brats.model import AuxiliaryHeads, build_network
from brats_cggm.brats.task import BratsSegmentationTask
from brats_cggm.core.balancer import StepContext
from tests.helpers.tiny_setup import MODALITIES, make_batches, make_trainer


def test_two_modalities_reduce_to_other_over_sum():
    delta = torch.tensor([0.1, 0.3])
    b = cggm_coefficients(delta, rho=1.3)
    assert b.tolist() == pytest.approx([1.3 * 0.3 / 0.4, 1.3 * 0.1 / 0.4])


def test_four_modalities_hand_computed():
    delta = torch.tensor([0.4, 0.2, 0.1, 0.3])  # S = 1.0
    b = cggm_coefficients(delta, rho=1.0)
    assert b.tolist() == pytest.approx([0.6, 0.8, 0.9, 0.7])
    assert int(b.argmin()) == 0  # the modality that improved most is slowed most


def test_equal_improvement_is_neutral():
    b = cggm_coefficients(torch.full((4,), 0.05), rho=2.0)
    assert b.tolist() == pytest.approx([2.0 * 3 / 4] * 4)


def test_degenerate_sum_gives_neutral():
    b = cggm_coefficients(torch.tensor([0.01, -0.01, 0.0, 0.0]), rho=1.0, s_min=1e-4)
    assert b.tolist() == pytest.approx([0.75] * 4)


def test_clamp_bounds_coefficients():
    b = cggm_coefficients(torch.tensor([0.5, -0.4]), rho=1.0)  # raw: -4 and 5
    assert b.tolist() == pytest.approx([0.0, 1.0])


def test_paper_formula_without_guards():
    b = cggm_coefficients(torch.tensor([0.5, -0.4]), rho=1.0, s_min=0.0, clamp=False)
    assert b.tolist() == pytest.approx([-4.0, 5.0], rel=1e-6)


def test_registry_and_bad_options():
    assert isinstance(create_balancer("cggm", modalities=MODALITIES), CGGMBalancer)
    with pytest.raises(ValueError, match="direction"):
        CGGMBalancer(MODALITIES, direction="weights")
    with pytest.raises(ValueError, match="at least two"):
        CGGMBalancer(("flair",))


class FixedCGGM(CGGMBalancer):
    """CGGM whose coefficients are forced, to compare one step against the same step with B = 1."""

    def __init__(self, fixed, **kwargs):
        super().__init__(MODALITIES, direction="none", **kwargs)
        self.fixed = torch.tensor(fixed)

    def extra_loss(self, ctx):
        super().extra_loss(ctx)
        self.coefficients = self.fixed.clone()
        return None


def _grads_after_one_step(balancer) -> dict[str, torch.Tensor]:
    trainer = make_trainer(balancer, make_batches(1), lr=0.0)
    trainer.run()
    named = {f"net.{n}": p.grad.clone() for n, p in trainer.network.named_parameters() if p.grad is not None}
    named.update({f"aux.{n}": p.grad.clone() for n, p in trainer.aux_heads.named_parameters() if p.grad is not None})
    return named


def test_only_encoder_gradients_are_scaled_by_their_coefficient():
    coefficients = [0.5, 1.7, 0.0, 1.2]
    scaled = _grads_after_one_step(FixedCGGM(coefficients))
    reference = _grads_after_one_step(FixedCGGM([1.0] * 4))
    assert scaled.keys() == reference.keys()
    encoder_params = 0
    for name, grad in reference.items():
        if name.startswith("net.encoders."):
            index = int(name.split(".")[2])
            torch.testing.assert_close(scaled[name], coefficients[index] * grad, rtol=1e-5, atol=1e-7)
            encoder_params += 1
        else:  # fusion, decoder, fusion head and auxiliary heads are untouched
            torch.testing.assert_close(scaled[name], grad, rtol=0, atol=0)
    assert encoder_params > 0
    assert any(n.startswith("net.fusion.") for n in reference) and any(n.startswith("aux.") for n in reference)


class AuxOnlyTask(BratsSegmentationTask):
    """Loss only on reduced-resolution (auxiliary) predictions, so any encoder gradient would be a leak."""

    def loss(self, logits, targets):
        if logits.shape[-1] == 16:  # the fused, full-resolution prediction
            return 0.0 * logits.sum()
        return super().loss(logits, targets)


def test_auxiliary_losses_never_reach_encoders():
    trainer = make_trainer(CGGMBalancer(MODALITIES, direction="none"), make_batches(1), lr=0.0)
    trainer.task = AuxOnlyTask()
    trainer.run()
    for encoder in trainer.network.encoders:
        assert all(p.grad is None or torch.count_nonzero(p.grad) == 0 for p in encoder.parameters())
    assert any(p.grad is not None and torch.count_nonzero(p.grad) > 0 for p in trainer.aux_heads.parameters())


def _context(balancer_epoch: int = 1, seed: int = 0) -> StepContext:
    torch.manual_seed(seed)
    network = build_network("cpu", modalities=MODALITIES, features=(4, 8, 16))
    heads = AuxiliaryHeads.for_network(network)
    task = BratsSegmentationTask()
    batch = make_batches(1, seed=seed)[0]
    output = network.forward_features(batch["image"])
    aux_logits = heads([[f.detach() for f in feats] for feats in output.features])
    aux_targets = task.aux_targets(batch["label"], aux_logits[0])
    return StepContext(
        network=network,
        heads=heads,
        task=task,
        inputs=batch["image"],
        targets=batch["label"],
        output=output,
        task_loss=task.loss(output.logits, batch["label"]),
        aux_logits=aux_logits,
        aux_targets=aux_targets,
        aux_losses=[task.loss(lg, aux_targets) for lg in aux_logits],
        utilization=torch.stack([task.utilization(lg, aux_targets) for lg in aux_logits]),
        epoch=balancer_epoch,
        iteration=1,
    )


def test_gm_loss_is_non_negative_and_reaches_only_the_fusion_head_last_layer():
    ctx = _context()
    balancer = CGGMBalancer(MODALITIES, rho=1.0, lam=0.5)
    balancer.previous_epsilon = torch.tensor([-0.5, 0.1, 0.2, -0.3])  # a spread of Δε, so B is not neutral
    extra = balancer.extra_loss(ctx)
    assert extra is not None and float(extra.detach()) >= 0.0
    assert float(extra.detach()) == pytest.approx(0.5 * float(balancer.scalars()["cggm/L_gm"]))
    params = dict(ctx.network.named_parameters()) | {f"aux.{n}": p for n, p in ctx.heads.named_parameters()}
    grads = torch.autograd.grad(extra, list(params.values()), allow_unused=True, retain_graph=True)
    reached = {n for (n, _), g in zip(params.items(), grads) if g is not None and torch.count_nonzero(g) > 0}
    assert reached and reached <= {"output_layer.weight", "output_layer.bias"}
    cosines = torch.stack([balancer.scalars()[f"cggm/cos/{m}"] for m in MODALITIES])
    assert torch.all(cosines.abs() <= 1.0 + 1e-6)


@pytest.mark.parametrize("seed", range(5))
def test_gm_loss_bounds_hold_for_any_coefficients(seed):
    from brats_cggm.balancing.cggm import _gm_loss

    g = torch.Generator().manual_seed(seed)
    b = 4 * torch.randn(4, generator=g)
    cos = 2 * torch.rand(4, generator=g) - 1
    loss = _gm_loss(b, cos)
    assert 0.0 <= float(loss) <= 2 * float(b.abs().mean()) + 1e-6


def test_param_mode_adds_the_previous_steps_loss():
    ctx = _context()
    balancer = CGGMBalancer(MODALITIES, rho=1.3, lam=0.2, direction="param")
    assert balancer.extra_loss(ctx) is None  # nothing from a previous step yet
    previous = float(balancer.scalars()["cggm/L_gm"])
    previous_grad = balancer.stale_grad.clone()
    extra = balancer.extra_loss(ctx)
    assert float(extra.detach()) == pytest.approx(0.2 * previous)
    (grad,) = torch.autograd.grad(extra, ctx.network.output_layer.weight)
    torch.testing.assert_close(grad, 0.2 * previous_grad)


def test_start_epoch_delays_modulation_but_tracks_epsilon():
    ctx = _context(balancer_epoch=1)
    balancer = CGGMBalancer(MODALITIES, start_epoch=1)
    assert balancer.extra_loss(ctx) is None
    assert balancer.coefficients.tolist() == [1.0] * 4
    torch.testing.assert_close(balancer.previous_epsilon, ctx.utilization.float())


def test_scalars_logged_every_iteration():
    trainer = make_trainer(CGGMBalancer(MODALITIES), make_batches(2))
    seen = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(dict(e.state.output["balancer"])))
    trainer.run()
    expected = {f"cggm/{k}/{m}" for k in ("epsilon", "delta", "B", "cos") for m in MODALITIES} | {"cggm/L_gm"}
    assert len(seen) == 2 and all(expected <= set(s) for s in seen)
    assert trainer.state.output["grad_norm"].shape == (4,)
