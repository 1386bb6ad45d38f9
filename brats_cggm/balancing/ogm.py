"""OGM / OGM-GE: On-the-fly Gradient Modulation with Generalization Enhancement (Peng et al., CVPR 2022).

Per step, a score ``s_u`` of each modality's prediction on the batch gives the discrepancy ratio
``ρ_u = s_u / s_ref(u)``; after backward, every parameter of a *dominant* encoder (``ρ_u > 1``) has its
gradient multiplied by ``k_u = 1 − tanh(α·ρ_u)`` (1 for the others). OGM-GE then adds Gaussian noise
``N(0, std(g))`` (std of the parameter's unscaled gradient, as the authors' code) to every encoder's
gradient, modulated or not, as the paper's Algorithm 1 does. Active in epochs ``[start_epoch, end_epoch]``
(1-based, inclusive).

M > 2: the reference ``s_ref(u)`` is the **mean** of the other modalities' scores by default
(``reference="mean"``); ``reference="min"`` compares against the weakest other modality (a more
aggressive throttle). For M = 2 both are the paper's ratio.

Scores. The paper's ``s_u = Σ_n softmax(out_u(x_n))_{y_n}`` needs a true class per sample, which
segmentation has not. We read the task's per-modality utilization of the auxiliary heads
(``score="utilization"``, default; for BraTS the mean Dice over TC, WT and ET of each head's
thresholded prediction, already all-reduced over ranks), or ``score="loss"``: ``exp(−L_u)`` of each
head's task loss (for cross-entropy, the geometric mean of the true-class probability — the closest
analogue of the paper's score), all-reduced here. Both are task-agnostic.

Departures: the authors' code only scales 4-D (2D-convolution) weights; here every parameter of the
encoder is scaled, and noise is skipped for single-element tensors (their std is undefined).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from brats_cggm.balancing.registry import register_balancer
from brats_cggm.core.balancer import Balancer, StepContext
from brats_cggm.core.distributed import all_reduce_mean

__all__ = ["OGMGEBalancer", "discrepancy_ratios", "modality_scores", "ogm_coefficients"]

REFERENCES = ("mean", "min")
SCORES = ("utilization", "loss")


def discrepancy_ratios(scores: torch.Tensor, reference: str = "mean", eps: float = 1e-8) -> torch.Tensor:
    """``ρ_u = s_u / s_ref(u)``, with ``s_ref`` the mean (or min) of the other modalities' scores.

    A modality without a score in this step (NaN: no rank saw it) has ratio 1 and is left out of the
    others' reference.

    Args:
        scores: ``(M,)`` per-modality scores, higher is better, M ≥ 2.
        reference: ``"mean"`` or ``"min"`` of the others.
        eps: added to the reference so that a zero score does not divide by zero.
    """
    if reference not in REFERENCES:
        raise ValueError(f"reference must be one of {REFERENCES}, got {reference!r}")
    scores = scores.float()
    num = scores.numel()
    if num < 2:
        raise ValueError("discrepancy ratios need at least two modalities")
    others = scores.unsqueeze(0).expand(num, num)
    mask = ~torch.eye(num, dtype=torch.bool)
    others = others[mask].view(num, num - 1)
    if reference == "mean":
        ref = others.nanmean(1)
    else:
        ref = torch.where(torch.isnan(others), torch.inf, others).min(1).values
    ratios = scores / (ref + eps)
    return torch.where(torch.isfinite(ratios), ratios, torch.ones_like(ratios))


def ogm_coefficients(ratios: torch.Tensor, alpha: float) -> torch.Tensor:
    """OGM's ``k_u = 1 − tanh(α·ρ_u)`` where ``ρ_u > 1``, else 1 (Eq. 10)."""
    return torch.where(ratios > 1.0, 1.0 - torch.tanh(alpha * ratios), torch.ones_like(ratios))


def modality_scores(ctx: StepContext, score: str) -> torch.Tensor:
    """The per-modality score a ratio is computed from (see the module docstring), identical on all ranks."""
    if score == "utilization":
        return ctx.utilization.detach().float().cpu()
    if score == "loss":
        losses = torch.stack([loss.detach().float() for loss in ctx.aux_losses])
        ran = torch.ones_like(losses) if ctx.present is None else ctx.present.to(losses.device).float()
        # averaged over the ranks whose head ran; NaN (no score) where none did
        totals = all_reduce_mean(torch.stack([torch.exp(-losses) * ran, ran]))
        return torch.where(totals[1] > 0, totals[0] / totals[1].clamp_min(1e-12), float("nan")).cpu()
    raise ValueError(f"score must be one of {SCORES}, got {score!r}")


@register_balancer("ogm_ge")
class OGMGEBalancer(Balancer):
    """OGM-GE as a balancer plug-in.

    Args:
        modalities: modality names, in the network's encoder order.
        alpha: α of ``k = 1 − tanh(α·ρ)`` (paper: 0.1–0.8).
        ge: add the generalization-enhancement noise (False gives plain OGM).
        reference: ``"mean"`` or ``"min"`` of the other modalities' scores (M > 2).
        score: ``"utilization"`` (aux heads' task metric, default) or ``"loss"`` (``exp(−L_u)``).
        start_epoch: first modulated epoch (1-based).
        end_epoch: last modulated epoch (inclusive); None = until the end.
        seed: seed of the noise generator (the same on every rank, so replicas stay identical).
    """

    def __init__(
        self,
        modalities: Sequence[str],
        alpha: float = 0.5,
        ge: bool = True,
        reference: str = "mean",
        score: str = "utilization",
        start_epoch: int = 1,
        end_epoch: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(modalities)
        if len(self.modalities) < 2:
            raise ValueError(f"OGM needs at least two modalities, got {self.modalities}")
        if reference not in REFERENCES:
            raise ValueError(f"reference must be one of {REFERENCES}, got {reference!r}")
        if score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {score!r}")
        self.alpha, self.ge, self.reference, self.score = float(alpha), bool(ge), reference, score
        self.start_epoch = int(start_epoch)
        self.end_epoch = None if end_epoch is None else int(end_epoch)
        self.seed = int(seed)
        self.coefficients = torch.ones(len(self.modalities))
        self.steps = 0
        self._generators: dict[str, torch.Generator] = {}

    def is_active(self, epoch: int) -> bool:
        """Whether modulation acts in (1-based) ``epoch``."""
        return epoch >= self.start_epoch and (self.end_epoch is None or epoch <= self.end_epoch)

    def _generator(self, device: torch.device) -> torch.Generator:
        key = str(device)
        if key not in self._generators:
            gen = torch.Generator(device=device)
            gen.manual_seed(self.seed + self.steps)
            self._generators[key] = gen
        return self._generators[key]

    def extra_loss(self, ctx: StepContext) -> None:
        scores = modality_scores(ctx, self.score)
        ratios = discrepancy_ratios(scores, self.reference)
        active = self.is_active(ctx.epoch)
        self.coefficients = ogm_coefficients(ratios, self.alpha) if active else torch.ones_like(ratios)
        if active:  # activity (docs/methods.md §0.3): k per modality and how often it throttled (k < 1)
            for i, name in enumerate(self.modalities):
                self.activity_statistics.observe(f"ogm_ge/k/{name}", float(self.coefficients[i]))
                self.activity_statistics.flag(f"ogm_ge/throttled/{name}", bool(self.coefficients[i] < 1.0))
        self._scalars = {}
        for i, name in enumerate(self.modalities):
            self._scalars[f"ogm_ge/score/{name}"] = float(scores[i])
            self._scalars[f"ogm_ge/ratio/{name}"] = float(ratios[i])
            self._scalars[f"ogm_ge/k/{name}"] = float(self.coefficients[i])
        return None

    @torch.no_grad()
    def after_backward(self, ctx: StepContext) -> None:
        self.steps += 1
        if not self.is_active(ctx.epoch):
            return
        for i, k in enumerate(self.coefficients.tolist()):
            for grad in self.encoder_grads(ctx.network, i):
                if self.ge and grad.numel() > 1:
                    std = grad.float().std().item() + 1e-8
                    noise = torch.empty_like(grad).normal_(0.0, std, generator=self._generator(grad.device))
                    grad.mul_(k).add_(noise)
                elif k != 1.0:
                    grad.mul_(k)

    def state_dict(self) -> dict[str, Any]:
        return {
            "coefficients": self.coefficients.clone(),
            "steps": self.steps,
            "generators": {k: g.get_state() for k, g in self._generators.items()},
            "activity": self.activity_statistics.state_dict(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.coefficients = state_dict["coefficients"].clone().float()
        self.steps = int(state_dict["steps"])
        self.activity_statistics.load_state_dict(state_dict.get("activity"))
        self._generators = {}
        for key, gen_state in state_dict.get("generators", {}).items():
            try:
                gen = torch.Generator(device=key)
            except RuntimeError:  # e.g. a CUDA run resumed on a CPU: reseeded from seed + steps on first use
                continue
            gen.set_state(gen_state)
            self._generators[key] = gen
