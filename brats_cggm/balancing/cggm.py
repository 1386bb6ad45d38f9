"""Classifier-guided Gradient Modulation (CGGM; Guo et al., NeurIPS 2024, arXiv 2411.01409).

Magnitude: every step, each auxiliary head's utilization ε_i is scored on the batch; with
Δε_i = ε_i(t) − ε_i(t−1) and S = Σ_k Δε_k, the gradients of every parameter of encoder i are
multiplied by ``B_i = ρ·(S − Δε_i)/S`` after backward (a modality that improved most is slowed most).
Direction: ``L_gm = mean_i(|B_i| − B_i·cos(g_F, g_i))`` is added with weight λ, where g_F is the
task-loss gradient of the fusion head's last layer and g_i that of head i's last layer.

Departures from the paper, each an option (see ``docs/methods.md`` §1): the neutral value
ρ(M−1)/M when |S| < ``s_min`` and ``clamp`` of B to [0, ρ(M−1)] (the paper's B is unbounded and may
flip the sign of a gradient), an optional EMA of ε, ε per epoch in place of per batch (``epsilon``),
the magnitude term switched off (``magnitude``), and three ways to build L_gm: ``grad`` (default;
differentiable with respect to the fusion head's last layer only, in the same step), ``param`` (the
authors' code: cosine of the last layers' *weights*, ρ dropped, added one step late) and ``none``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from brats_cggm.balancing.registry import register_balancer
from brats_cggm.core.balancer import Balancer, StepContext
from brats_cggm.core.distributed import all_reduce_mean
from brats_cggm.core.modules import child_module, output_weight, tensor_attribute

__all__ = ["CGGMBalancer", "cggm_coefficients"]

DIRECTIONS = ("grad", "param", "none")
#: Granularity of ε: every batch (the paper) or the mean of an epoch's batches, B held for the next epoch.
EPSILON_GRANULARITIES = ("batch", "epoch")


def cggm_coefficients(delta: torch.Tensor, rho: float = 1.0, s_min: float = 1e-4, clamp: bool = True) -> torch.Tensor:
    """CGGM's magnitude coefficients ``B_i = ρ·(S − Δε_i)/S`` (``docs/methods.md`` §1.3, Eq. 7–8).

    Args:
        delta: Δε per modality, shape ``(M,)``.
        rho: the scale ρ.
        s_min: below this |S| every coefficient is the neutral ρ(M−1)/M; 0 disables the guard, and
            S then gets the authors' 1e-8 so that S = 0 does not divide by zero.
        clamp: clamp B to [0, ρ(M−1)], so a coefficient never turns descent into ascent.

    Returns:
        B, shape ``(M,)``.
    """
    num_modalities = delta.numel()
    total = delta.sum()
    if s_min > 0 and total.abs() < s_min:
        coefficients = torch.full_like(delta, rho * (num_modalities - 1) / num_modalities)
    else:
        if s_min <= 0:
            total = total + 1e-8
        coefficients = rho * (total - delta) / total
    if clamp:
        coefficients = coefficients.clamp(0.0, rho * (num_modalities - 1))
    return coefficients


def _gm_loss(coefficients: torch.Tensor, cosines: torch.Tensor) -> torch.Tensor:
    """``mean_i(|B_i| − B_i·cos_i)`` (Eq. 13); non-negative since |cos| ≤ 1."""
    return (coefficients.abs() - coefficients * cosines).mean()


@register_balancer("cggm")
class CGGMBalancer(Balancer):
    """CGGM as a balancer plug-in.

    Args:
        modalities: modality names, in the network's encoder order.
        rho: ρ, the scale of the coefficients.
        lam: λ, the weight of L_gm (the paper's lambda).
        direction: ``"grad"``, ``"param"`` or ``"none"`` (see the module docstring).
        s_min: |S| under which the neutral coefficient is used; 0 reproduces the paper.
        clamp: clamp B to [0, ρ(M−1)]; False reproduces the paper.
        ema: smoothing of ε (ε ← ema·ε_prev + (1 − ema)·ε, per batch or per epoch as ``epsilon``); 0 is the
            paper.
        start_epoch: number of epochs trained without modulation (ε is still tracked).
        epsilon: ``"batch"`` (the paper: ε, Δε and B every step) or ``"epoch"`` (ε of an epoch is the mean of
            its steps' ε, Δε is taken at the epoch's end and the resulting B holds through the next epoch; the
            first epoch uses the neutral ρ(M−1)/M).
        magnitude: scale the encoders' gradients by B; False leaves them unscaled (direction term only).
    """

    detach_aux_features = True

    def __init__(
        self,
        modalities: Sequence[str],
        rho: float = 1.0,
        lam: float = 0.1,
        direction: str = "grad",
        s_min: float = 1e-4,
        clamp: bool = True,
        ema: float = 0.0,
        start_epoch: int = 0,
        epsilon: str = "batch",
        magnitude: bool = True,
    ) -> None:
        super().__init__(modalities)
        if len(self.modalities) < 2:
            raise ValueError(f"CGGM needs at least two modalities, got {self.modalities}")
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        if not 0.0 <= ema < 1.0:
            raise ValueError(f"ema must be in [0, 1), got {ema}")
        if epsilon not in EPSILON_GRANULARITIES:
            raise ValueError(f"epsilon must be one of {EPSILON_GRANULARITIES}, got {epsilon!r}")
        if not magnitude and direction == "none":
            raise ValueError("magnitude false with direction none leaves CGGM nothing to do; use the joint balancer")
        self.rho, self.lam, self.direction = float(rho), float(lam), direction
        self.s_min, self.clamp, self.ema, self.start_epoch = float(s_min), bool(clamp), float(ema), int(start_epoch)
        num = len(self.modalities)
        self.previous_epsilon = torch.zeros(num)
        self.smoothed_epsilon: torch.Tensor | None = None
        self.steps = 0
        # ``param`` mode adds the previous step's L_gm: its value and its gradient w.r.t. the fusion
        # head's last-layer weight are kept (a graph cannot be checkpointed, these two can).
        self.stale_value: torch.Tensor | None = None
        self.stale_grad: torch.Tensor | None = None
        self.coefficients = torch.ones(num)
        self.epsilon, self.magnitude = epsilon, bool(magnitude)
        # ``epoch`` granularity: this epoch's sum and count of ε per modality (steps where its head ran), and
        # the B and Δε decided at the last epoch's end (neutral before the first one ends).
        self.epoch_sum = torch.zeros(num)
        self.epoch_count = torch.zeros(num)
        self.held_coefficients = torch.full((num,), self.rho * (num - 1) / num)
        self.held_delta = torch.zeros(num)

    def is_active(self, epoch: int) -> bool:
        """Whether modulation acts in (1-based) ``epoch``."""
        return epoch > self.start_epoch

    def _update_epsilon(self, epsilon: torch.Tensor) -> torch.Tensor:
        epsilon = epsilon.detach().float().cpu()
        if self.ema > 0:
            if self.smoothed_epsilon is not None:
                epsilon = self.ema * self.smoothed_epsilon + (1.0 - self.ema) * epsilon
            self.smoothed_epsilon = epsilon
        delta = epsilon - self.previous_epsilon
        self.previous_epsilon = epsilon
        self.steps += 1
        return delta

    def _accumulate_epsilon(self, ctx: StepContext) -> None:
        ran = torch.ones(len(self.modalities)) if ctx.present is None else ctx.present.detach().float().cpu()
        # ε of a head that did not run may be NaN (no rank saw its modality): it must not enter the sum
        utilization = ctx.utilization.detach().float().cpu()
        self.epoch_sum += torch.where(ran > 0, utilization, torch.zeros_like(utilization))
        self.epoch_count += ran

    def epoch_completed(self, epoch: int) -> None:
        """``epsilon="epoch"``: ε(e) from the epoch's steps, Δε = ε(e) − ε(e−1) and the B of the next epoch."""
        if self.epsilon != "epoch" or not bool(self.epoch_count.any()):
            return
        # sums and counts over every rank's steps (each step's ε is already rank-averaged), so all ranks agree
        totals = all_reduce_mean(torch.stack([self.epoch_sum, self.epoch_count]))
        seen = totals[1] > 0
        # a modality no step saw keeps its ε (Δε = 0)
        mean = torch.where(seen, totals[0] / totals[1].clamp_min(1e-12), self.previous_epsilon)
        self.held_delta = self._update_epsilon(mean)
        self.held_coefficients = cggm_coefficients(self.held_delta, self.rho, self.s_min, self.clamp)
        self.epoch_sum.zero_()
        self.epoch_count.zero_()

    def extra_loss(self, ctx: StepContext) -> torch.Tensor | None:
        if self.epsilon == "epoch":
            self._accumulate_epsilon(ctx)
            delta, coefficients = self.held_delta, self.held_coefficients
        else:
            delta = self._update_epsilon(ctx.utilization)
            coefficients = cggm_coefficients(delta, self.rho, self.s_min, self.clamp)
        active = self.is_active(ctx.epoch)
        self.coefficients = coefficients if active else torch.ones_like(coefficients)
        if active:
            self._record_activity(delta, coefficients)
        scalars: dict[str, Any] = {}
        for i, name in enumerate(self.modalities):
            scalars[f"cggm/epsilon/{name}"] = self.previous_epsilon[i]
            scalars[f"cggm/delta/{name}"] = delta[i]
            scalars[f"cggm/B/{name}"] = self.coefficients[i]
        self._scalars = scalars
        if not active or self.direction == "none":
            return None
        if self.direction == "grad":
            return self._grad_direction_loss(ctx, coefficients)
        return self._param_direction_loss(ctx, coefficients)

    def _grad_direction_loss(self, ctx: StepContext, coefficients: torch.Tensor) -> torch.Tensor:
        last_layer = child_module(ctx.network, "output_layer")
        # Re-applying the last layer to its detached input makes g_F differentiable with respect to
        # that layer alone: L_gm then steers the fusion head without a double backward through the network.
        logits = last_layer(ctx.output.head_input.detach())
        fused_grad = torch.autograd.grad(
            ctx.task.loss(logits, ctx.targets), tensor_attribute(last_layer, "weight"), create_graph=True
        )[0]
        # a head that did not run (its modality absent from the batch) has no gradient: L_gm averages the others
        ran = [i for i in range(len(ctx.heads)) if ctx.present is None or bool(ctx.present[i])]
        aux_weights = [output_weight(ctx.heads[i]) for i in ran]
        aux_grads = torch.autograd.grad([ctx.aux_losses[i] for i in ran], aux_weights, retain_graph=True)
        fused_flat = fused_grad.flatten().float()
        cosines = torch.stack([F.cosine_similarity(fused_flat, g.detach().flatten().float(), dim=0) for g in aux_grads])
        loss = _gm_loss(coefficients[ran].to(cosines.device), cosines)
        self._log_direction(cosines, loss, ran)
        return self.lam * loss

    def _param_direction_loss(self, ctx: StepContext, coefficients: torch.Tensor) -> torch.Tensor | None:
        weight = output_weight(ctx.network)
        stale = None
        if self.stale_value is not None and self.stale_grad is not None:
            stale_grad = self.stale_grad.to(weight.device, weight.dtype)
            # value = the previous L_gm, gradient w.r.t. the weight = the previous L_gm's gradient.
            stale = self.lam * (
                self.stale_value.to(weight.device) + (weight * stale_grad).sum() - (weight.detach() * stale_grad).sum()
            )
        leaf = weight.detach().clone().requires_grad_(True)
        cosines = torch.stack(
            [F.cosine_similarity(leaf.flatten(), output_weight(head).detach().flatten(), dim=0) for head in ctx.heads]
        )
        loss = _gm_loss((coefficients / self.rho).to(cosines.device), cosines)
        (grad,) = torch.autograd.grad(loss, leaf)
        self.stale_value, self.stale_grad = loss.detach().cpu(), grad.detach().cpu()
        self._log_direction(cosines.detach(), loss.detach(), list(range(len(self.modalities))))
        return stale

    def _log_direction(self, cosines: torch.Tensor, loss: torch.Tensor, modalities: list[int]) -> None:
        for cosine, i in zip(cosines, modalities, strict=True):
            self._scalars[f"cggm/cos/{self.modalities[i]}"] = cosine.detach()
        self._scalars["cggm/L_gm"] = loss.detach()

    def _record_activity(self, delta: torch.Tensor, coefficients: torch.Tensor) -> None:
        """Activity of a modulated step (``docs/methods.md`` §0.3): B per modality, whether the neutral value
        was used (|S| < s_min) and, per modality, whether the clamp changed B."""
        stats = self.activity_statistics
        stats.flag("cggm/neutral", self.s_min > 0 and abs(float(delta.sum())) < self.s_min)
        unclamped = cggm_coefficients(delta, self.rho, self.s_min, clamp=False)
        for i, name in enumerate(self.modalities):
            stats.observe(f"cggm/B/{name}", float(coefficients[i]))
            stats.flag(f"cggm/clamped/{name}", bool(unclamped[i] != coefficients[i]))

    @torch.no_grad()
    def after_backward(self, ctx: StepContext) -> None:
        if not self.magnitude or not self.is_active(ctx.epoch):
            return
        for i, coefficient in enumerate(self.coefficients.tolist()):
            grads = self.encoder_grads(ctx.network, i)
            if grads:
                torch._foreach_mul_(grads, coefficient)

    def state_dict(self) -> dict[str, Any]:
        return {
            "previous_epsilon": self.previous_epsilon.clone(),
            "smoothed_epsilon": None if self.smoothed_epsilon is None else self.smoothed_epsilon.clone(),
            "steps": self.steps,
            "coefficients": self.coefficients.clone(),
            "stale_value": self.stale_value,
            "stale_grad": self.stale_grad,
            "activity": self.activity_statistics.state_dict(),
            "epoch_sum": self.epoch_sum.clone(),
            "epoch_count": self.epoch_count.clone(),
            "held_coefficients": self.held_coefficients.clone(),
            "held_delta": self.held_delta.clone(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.previous_epsilon = state_dict["previous_epsilon"].clone().float()
        smoothed = state_dict.get("smoothed_epsilon")
        self.smoothed_epsilon = None if smoothed is None else smoothed.clone().float()
        self.steps = int(state_dict["steps"])
        self.coefficients = state_dict["coefficients"].clone().float()
        self.stale_value = state_dict.get("stale_value")
        self.stale_grad = state_dict.get("stale_grad")
        self.activity_statistics.load_state_dict(state_dict.get("activity"))
        # absent from checkpoints written before ``epsilon`` existed (batch granularity): keep the initial values
        for key in ("epoch_sum", "epoch_count", "held_coefficients", "held_delta"):
            if key in state_dict:
                setattr(self, key, state_dict[key].clone().float())
