"""OPM: On-the-fly Prediction Modulation (Wei et al., TPAMI 2024), a feature-level balancer.

The same discrepancy ratio as OGM (:func:`~brats_cggm.balancing.ogm.discrepancy_ratios`) decides how
often a dominant modality's features are dropped before fusion: with ``ρ_u > 1``,

    q_u = q_base · (1 + λ · tanh(ρ_u − 1))      (0 for ρ_u ≤ 1, capped at ``q_max``),

every sample's modality u is left out of fusion with probability ``q_u`` (the network's fusion mask:
all levels together; its encoder and auxiliary head still run). The fused modalities are rescaled by the
one fusion rule of :mod:`brats_cggm.core.availability` (``M/|S|`` per sample), where the authors' code
rescales every modality's features by ``1/(1 − θ)`` with ``θ = Σ_m d_m q_m / Σ_m d_m`` (d_m: modality m's
feature width): both keep the fusion's input at its expected scale, and one rule serves training-time
absence, valuation and inference alike. Dropping happens on a batch with probability ``p_exe`` and after
``warmup_epochs`` epochs of plain joint training.

M > 2: ratio against the **mean** of the other modalities by default (``reference="min"`` available);
several modalities can be dominant, each is dropped with its own q_u. A sample drawn without any modality
keeps one (``all_dropped="keep_one"``, default) or, as in the authors' code, takes no part in the fused
loss of that step (``all_dropped="exclude"``).

Scores: as OGM (the paper's summed true-class softmax has no segmentation counterpart): the auxiliary
heads' utilization (BraTS: mean Dice of TC, WT, ET; ``score="utilization"``) or ``exp(−L_u)``
(``score="loss"``).

Step order: the fusion mask is drawn before the forward pass and the heads score the batch after it, so q
is computed from the previous step's scores (a one-step lag; the authors' code scores the batch from the
same forward pass's encoder features, through the fusion head's weights, before it drops).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from brats_cggm.balancing.ogm import REFERENCES, SCORES, discrepancy_ratios, modality_scores
from brats_cggm.balancing.registry import register_balancer
from brats_cggm.core.availability import draw_availability
from brats_cggm.core.balancer import Balancer, StepContext

__all__ = ["ALL_DROPPED", "OPMBalancer", "opm_drop_probabilities"]

#: What happens to a sample whose every modality is drawn dropped (``OPMBalancer(all_dropped=...)``).
ALL_DROPPED = ("keep_one", "exclude")


def opm_drop_probabilities(ratios: torch.Tensor, q_base: float, lam: float, q_max: float = 0.95) -> torch.Tensor:
    """OPM's drop probabilities ``q_u = q_base·(1 + λ·tanh(ρ_u − 1))`` where ``ρ_u > 1``, else 0 (``docs/methods.md``
    §2.3).

    Args:
        ratios: the discrepancy ratios ρ, shape ``(M,)``.
        q_base: the base drop probability.
        lam: λ, the ratio's weight.
        q_max: the cap of q.

    Returns:
        q, shape ``(M,)``, in ``[0, q_max]``.
    """
    q = q_base * (1.0 + lam * torch.tanh(ratios.float() - 1.0))
    return torch.where(ratios > 1.0, q, torch.zeros_like(q)).clamp(0.0, q_max)


@register_balancer("opm")
class OPMBalancer(Balancer):
    """OPM as a balancer plug-in (a feature hook driven by the auxiliary heads' scores).

    Args:
        modalities: modality names, in the network's encoder order.
        q_base: base drop probability (paper: 0.4–0.5).
        lam: λ, the ratio's weight (paper: 0.5).
        p_exe: probability that dropping is executed on a batch (paper: 0.7).
        warmup_epochs: epochs of joint training before dropping starts (paper: 5).
        reference: ``"mean"`` or ``"min"`` of the other modalities' scores.
        score: ``"utilization"`` or ``"loss"``, as :class:`~brats_cggm.balancing.ogm.OGMGEBalancer`.
        q_max: cap of q (a probability of 1 would make the rescaling infinite).
        keep_one: with ``all_dropped="keep_one"``, never drop every modality of a sample (one, chosen
            uniformly, stays); False lets such a sample fuse every modality it has (no drop for it).
        all_dropped: what happens to a sample whose every modality is drawn dropped: ``"keep_one"`` (as
            ``keep_one`` says) or ``"exclude"`` (the authors' code: the sample takes no part in the fused
            prediction's loss of that step; see ``docs/methods.md`` §2.4).
    """

    @classmethod
    def short_run_kwargs(cls, max_epochs: int) -> dict[str, Any]:
        """The warm-up scaled to the budget: a tenth of the run (paper: 5 of about 50 epochs)."""
        return {"warmup_epochs": max_epochs // 10}

    def __init__(
        self,
        modalities: Sequence[str],
        q_base: float = 0.5,
        lam: float = 0.5,
        p_exe: float = 0.7,
        warmup_epochs: int = 5,
        reference: str = "mean",
        score: str = "utilization",
        q_max: float = 0.95,
        keep_one: bool = True,
        all_dropped: str = "keep_one",
    ) -> None:
        super().__init__(modalities)
        if len(self.modalities) < 2:
            raise ValueError(f"OPM needs at least two modalities, got {self.modalities}")
        if reference not in REFERENCES:
            raise ValueError(f"reference must be one of {REFERENCES}, got {reference!r}")
        if score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {score!r}")
        if not 0.0 <= q_max < 1.0:
            raise ValueError(f"q_max must be in [0, 1), got {q_max}")
        self.q_base, self.lam, self.p_exe = float(q_base), float(lam), float(p_exe)
        self.warmup_epochs, self.reference, self.score = int(warmup_epochs), reference, score
        if all_dropped not in ALL_DROPPED:
            raise ValueError(f"all_dropped must be one of {ALL_DROPPED}, got {all_dropped!r}")
        self.q_max, self.keep_one, self.all_dropped = float(q_max), bool(keep_one), all_dropped
        # read by the trainer on this instance: the samples the drop leaves empty leave the fused loss
        self.exclude_unfused = all_dropped == "exclude"
        self.ratios = torch.ones(len(self.modalities))
        self.probabilities = torch.zeros(len(self.modalities))
        self.executed = 0
        self.steps = 0

    def fusion_mask(self, epoch: int, batch_size: int) -> torch.Tensor | None:
        self.steps += 1
        after_warmup = epoch > self.warmup_epochs
        executed = after_warmup and bool(self.probabilities.sum() > 0)
        executed = executed and float(torch.rand(())) < self.p_exe
        self._scalars["opm/executed"] = float(executed)
        # activity (docs/methods.md §0.3): executed steps / steps, q per modality after the warm-up, and the
        # fraction of an executed step's samples left out of fusion per modality
        self.activity_statistics.flag("opm/executed", executed)
        if after_warmup:
            for i, name in enumerate(self.modalities):
                self.activity_statistics.observe(f"opm/q/{name}", float(self.probabilities[i]))
        if not executed:
            return None
        self.executed += 1
        mask = draw_availability(batch_size, self.probabilities, self.keep_one and not self.exclude_unfused)
        for i, name in enumerate(self.modalities):
            self.activity_statistics.observe(f"opm/dropped/{name}", 1.0 - float(mask[:, i].float().mean()))
        if self.exclude_unfused:
            self.activity_statistics.observe("opm/excluded", 1.0 - float(mask.any(1).float().mean()))
        return mask

    def extra_loss(self, ctx: StepContext) -> None:
        scores = modality_scores(ctx, self.score)
        self.ratios = discrepancy_ratios(scores, self.reference)
        self.probabilities = opm_drop_probabilities(self.ratios, self.q_base, self.lam, self.q_max)
        for i, name in enumerate(self.modalities):
            self._scalars[f"opm/score/{name}"] = float(scores[i])
            self._scalars[f"opm/ratio/{name}"] = float(self.ratios[i])
            self._scalars[f"opm/q/{name}"] = float(self.probabilities[i])
        return None

    def state_dict(self) -> dict[str, Any]:
        return {
            "ratios": self.ratios.clone(),
            "probabilities": self.probabilities.clone(),
            "executed": self.executed,
            "steps": self.steps,
            "activity": self.activity_statistics.state_dict(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.ratios = state_dict["ratios"].clone().float()
        self.probabilities = state_dict["probabilities"].clone().float()
        self.executed = int(state_dict["executed"])
        self.steps = int(state_dict["steps"])
        self.activity_statistics.load_state_dict(state_dict.get("activity"))
