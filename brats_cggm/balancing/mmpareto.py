"""MMPareto: innocent uni-modal assistance (Wei & Hu, ICML 2024, arXiv 2405.17730).

The auxiliary (uni-modal) heads train **through** the encoders (``detach_aux_features = False``), so
encoder u receives two gradients: ``g_mm = ∇_{θ_u} L_fused`` and ``g_uni = ∇_{θ_u} L_u``. Per encoder
(both flattened over all its parameters):

- if ``cos(g_mm, g_uni) > 0`` the weights are ``(c_mm, c_uni) = (½, ½)``;
- otherwise the two-task minimum-norm (MGDA) weights
  ``c_mm = clamp((g_uni − g_mm)·g_uni / ‖g_mm − g_uni‖², 0, 1)``, ``c_uni = 1 − c_mm``;

and every parameter tensor's gradient becomes ``g = 2(c_mm·g_mm + c_uni·g_uni)``, rescaled to the norm of
the plain sum ``g_mm + g_uni`` of that tensor when that norm is larger, then multiplied by γ (1.5), as
the authors' code does (weights per encoder, rescaling per parameter tensor, γ always applied).

Cost: one extra backward of the fused loss through the network (``torch.autograd.grad`` to the encoder
parameters) before the full backward; ``g_uni`` is then the full gradient minus ``g_mm``, since head u's
loss reaches encoder u only. Under DDP the extra gradients are all-reduced, as the full ones are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from brats_cggm.balancing.registry import register_balancer
from brats_cggm.core.balancer import Balancer, StepContext
from brats_cggm.core.distributed import all_reduce_mean
from brats_cggm.core.modules import module_list

__all__ = ["MMParetoBalancer", "mmpareto_combine", "pareto_weights"]


def pareto_weights(g_mm: torch.Tensor, g_uni: torch.Tensor) -> tuple[float, float, float]:
    """``(c_mm, c_uni, cos)`` for two flattened gradients (see the module docstring)."""
    g_mm, g_uni = g_mm.flatten().float(), g_uni.flatten().float()
    cos = float(F.cosine_similarity(g_mm, g_uni, dim=0))
    if cos > 0:
        return 0.5, 0.5, cos
    diff = g_mm - g_uni
    denom = float(diff.dot(diff))
    if denom <= 0:
        return 0.5, 0.5, cos
    c_mm = min(max(float((g_uni - g_mm).dot(g_uni)) / denom, 0.0), 1.0)
    return c_mm, 1.0 - c_mm, cos


def mmpareto_combine(g_mm: torch.Tensor, g_uni: torch.Tensor, c_mm: float, c_uni: float, gamma: float) -> torch.Tensor:
    """One parameter tensor's new gradient: ``γ·max(1, ‖g_mm + g_uni‖/‖g‖)·g``, ``g = 2(c_mm·g_mm + c_uni·g_uni)``."""
    new = 2.0 * (c_mm * g_mm + c_uni * g_uni)
    new_norm = torch.linalg.vector_norm(new)
    sum_norm = torch.linalg.vector_norm(g_mm + g_uni)
    factor = torch.where(new_norm > 0, sum_norm / new_norm.clamp_min(1e-30), torch.ones_like(new_norm))
    return new * factor.clamp_min(1.0) * gamma


@register_balancer("mmpareto")
class MMParetoBalancer(Balancer):
    """MMPareto as a balancer plug-in (auxiliary heads not detached; overrides :meth:`backward`).

    Args:
        modalities: modality names, in the network's encoder order.
        gamma: γ, the final scale of the encoders' gradients (paper: 1.5).
    """

    detach_aux_features = False

    def __init__(self, modalities: Sequence[str], gamma: float = 1.5) -> None:
        super().__init__(modalities)
        self.gamma = float(gamma)
        self.engine: Any = None
        self.conflicts = torch.zeros(len(self.modalities))
        self.steps = 0

    def attach(self, engine: Any) -> None:
        self.engine = engine

    def _loss_scale(self) -> float:
        engine = self.engine
        scaler = getattr(engine, "scaler", None) if engine is not None and getattr(engine, "amp", False) else None
        return float(scaler.get_scale()) if scaler is not None else 1.0

    def backward(self, ctx: StepContext, loss: torch.Tensor) -> None:
        encoders = module_list(ctx.network, "encoders")
        params = [[p for p in enc.parameters() if p.requires_grad] for enc in encoders]
        flat = [p for group in params for p in group]
        fused = ctx.task_loss * self._loss_scale()
        grads = torch.autograd.grad(fused, flat, retain_graph=True, allow_unused=True)
        g_mm = [torch.zeros_like(p) if g is None else g for p, g in zip(flat, grads)]
        # DDP averages the full gradients over ranks in backward; g_mm must be averaged the same way.
        vector = all_reduce_mean(torch.cat([g.flatten() for g in g_mm]))
        g_mm = list(torch.split(vector, [p.numel() for p in flat]))
        loss.backward()
        self.steps += 1
        self._scalars = {}
        offset = 0
        with torch.no_grad():
            for i, group in enumerate(params):
                mm = [g.view_as(p) for g, p in zip(g_mm[offset : offset + len(group)], group)]
                offset += len(group)
                if all(p.grad is None for p in group):
                    continue  # the encoder did not run (its modality absent): it gets no gradient
                total = [torch.zeros_like(p) if p.grad is None else p.grad for p in group]
                uni = [t - m for t, m in zip(total, mm)]
                c_mm, c_uni, cos = pareto_weights(
                    torch.cat([m.flatten() for m in mm]), torch.cat([u.flatten() for u in uni])
                )
                for p, m, u in zip(group, mm, uni):
                    p.grad = mmpareto_combine(m, u, c_mm, c_uni, self.gamma).to(p.dtype)
                conflict = cos <= 0
                self.conflicts[i] += float(conflict)
                name = self.modalities[i] if i < len(self.modalities) else str(i)
                # activity (docs/methods.md §0.3): how often the two gradients conflict, the fused one's weight
                self.activity_statistics.flag(f"mmpareto/conflict/{name}", bool(conflict))
                self.activity_statistics.observe(f"mmpareto/c_mm/{name}", float(c_mm))
                self._scalars[f"mmpareto/cos/{name}"] = cos
                self._scalars[f"mmpareto/c_mm/{name}"] = c_mm
                self._scalars[f"mmpareto/conflict/{name}"] = float(conflict)

    def state_dict(self) -> dict[str, Any]:
        return {
            "conflicts": self.conflicts.clone(),
            "steps": self.steps,
            "activity": self.activity_statistics.state_dict(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.conflicts = state_dict["conflicts"].clone().float()
        self.steps = int(state_dict["steps"])
        self.activity_statistics.load_state_dict(state_dict.get("activity"))
