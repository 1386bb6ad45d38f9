"""InfoReg: information-acquisition regulation in the prime learning window (Huang et al., CVPR 2025).

Information amount of modality m in epoch t: the trace of its encoder's Fisher information, estimated
as the mean over the epoch's steps of ``‖∇_{φ_m} L‖²`` (the encoder gradient before any edit; with the
auxiliary heads on detached features this is the task loss's gradient). After two epochs, modality m
is in its **prime learning window** during epoch t when

    (Tr_{t−1} − Tr_{t−2}) / Tr_{t−1} > K

(its information is still growing fast). The **performance gap** of m on a step is the mean of
``s_m − s_{m'}`` over the modalities m' that m outperforms (0 when there is none), with s a
higher-is-better score — the task's utilization of the auxiliary heads (BraTS: mean Dice of TC, WT,
ET per head), already all-reduced. (The paper's text writes a loss here, which inverts the meaning;
we use a score, see ``docs/methods.md`` §3.3.) Inside its window, an information-sufficient modality
(Δ_m > 0) is slowed by a proximal pull towards the previous epoch's parameters:

    ∇_{φ_m} ← ∇_{φ_m} + α_m · (θ_m − θ_m^{prev epoch}),   α_m = exp(β · tanh(Δ_m)).

Defaults: the paper's best β = 0.9, K = 0.04. The previous-epoch parameters and the trace history are
part of :meth:`InfoRegBalancer.state_dict`, so a resumed run regulates exactly as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from brats_cggm.balancing.registry import register_balancer
from brats_cggm.core.balancer import Balancer, StepContext
from brats_cggm.core.distributed import all_reduce_mean
from brats_cggm.core.modules import module_list

__all__ = ["InfoRegBalancer", "inforeg_alpha", "performance_gaps", "prime_window"]


def prime_window(trace_prev: torch.Tensor, trace_prev2: torch.Tensor, threshold: float) -> torch.Tensor:
    """``(Tr_{t−1} − Tr_{t−2}) / Tr_{t−1} > K`` per modality (False where Tr_{t−1} is 0)."""
    prev = trace_prev.float()
    safe = torch.where(prev > 0, prev, torch.ones_like(prev))
    return (prev > 0) & ((prev - trace_prev2.float()) / safe > threshold)


def performance_gaps(scores: torch.Tensor) -> torch.Tensor:
    """Δ_m = mean of ``s_m − s_{m'}`` over the m' with ``s_{m'} < s_m`` (0 if m outperforms none)."""
    scores = scores.float()
    diff = scores.view(-1, 1) - scores.view(1, -1)  # [m, m'] = s_m - s_m'
    better = diff > 0
    count = better.sum(1)
    total = torch.where(better, diff, torch.zeros_like(diff)).sum(1)
    return torch.where(count > 0, total / count.clamp_min(1), torch.zeros_like(total))


def inforeg_alpha(gaps: torch.Tensor, beta: float) -> torch.Tensor:
    """``α = exp(β·tanh(Δ))``."""
    return torch.exp(beta * torch.tanh(gaps.float()))


@register_balancer("inforeg")
class InfoRegBalancer(Balancer):
    """InfoReg as a balancer plug-in (gradient edits after backward, epoch-level references).

    Args:
        modalities: modality names, in the network's encoder order.
        beta: β of ``α = exp(β·tanh(Δ))``.
        threshold: K, the relative growth of the information amount that opens the window.
        start_epoch: number of epochs trained without regulation (the trace is still tracked).
    """

    def __init__(
        self, modalities: Sequence[str], beta: float = 0.9, threshold: float = 0.04, start_epoch: int = 0
    ) -> None:
        super().__init__(modalities)
        if len(self.modalities) < 2:
            raise ValueError(f"InfoReg needs at least two modalities, got {self.modalities}")
        num = len(self.modalities)
        self.beta, self.threshold, self.start_epoch = float(beta), float(threshold), int(start_epoch)
        self.trace_sum = torch.zeros(num, dtype=torch.float64)
        self.trace_steps = 0
        self.traces: list[torch.Tensor] = []  # Tr per completed epoch
        self.window = torch.zeros(num, dtype=torch.bool)
        self.reference: list[list[torch.Tensor]] | None = None  # θ^{prev epoch} per encoder
        self.regulated_steps = torch.zeros(num)
        self.network: torch.nn.Module | None = None
        # epoch-level decisions (trace, window) stay in scalars() until the next epoch end, so the
        # per-step logging of the trainer records them
        self._epoch_scalars: dict[str, float] = {}

    def attach(self, engine: Any) -> None:
        from brats_cggm.core.distributed import unwrap

        self.network = unwrap(engine.network)
        if self.reference is None:
            self.reference = self._snapshot(self.network)

    @staticmethod
    @torch.no_grad()
    def _snapshot(network: torch.nn.Module) -> list[list[torch.Tensor]]:
        return [[p.detach().clone() for p in encoder.parameters()] for encoder in module_list(network, "encoders")]

    @torch.no_grad()
    def after_backward(self, ctx: StepContext) -> None:
        if self.reference is None:
            self.network = ctx.network
            self.reference = self._snapshot(ctx.network)
        num = len(self.modalities)
        squared = torch.zeros(num, dtype=torch.float64)
        for i in range(num):
            grads = self.encoder_grads(ctx.network, i)
            if grads:
                squared[i] = float(torch.stack(torch._foreach_norm(grads)).double().pow(2).sum())
        self.trace_sum += squared
        self.trace_steps += 1

        gaps = performance_gaps(ctx.utilization.detach().float().cpu())
        alphas = inforeg_alpha(gaps, self.beta)
        active = ctx.epoch > self.start_epoch
        regulate = self.window & (gaps > 0) & active
        self._scalars = {}
        for i, name in enumerate(self.modalities):
            self.activity_statistics.flag(f"inforeg/regulated/{name}", bool(regulate[i]))
            self._scalars[f"inforeg/grad_sq/{name}"] = float(squared[i])
            self._scalars[f"inforeg/gap/{name}"] = float(gaps[i])
            self._scalars[f"inforeg/window/{name}"] = float(self.window[i])
            self._scalars[f"inforeg/alpha/{name}"] = float(alphas[i]) if regulate[i] else 0.0
            if not regulate[i]:
                continue
            self.regulated_steps[i] += 1
            self.activity_statistics.observe(f"inforeg/alpha/{name}", float(alphas[i]))
            params = list(module_list(ctx.network, "encoders")[i].parameters())
            for p, ref in zip(params, self.reference[i], strict=True):
                if p.grad is None:
                    continue
                p.grad.add_(p.detach() - ref.to(p.device), alpha=float(alphas[i]))

    @torch.no_grad()
    def epoch_completed(self, epoch: int) -> None:
        mean = self.trace_sum / max(self.trace_steps, 1)
        mean = all_reduce_mean(mean.float()).double().cpu()
        self.traces.append(mean)
        self.trace_sum.zero_()
        self.trace_steps = 0
        if len(self.traces) >= 2:
            self.window = prime_window(self.traces[-1], self.traces[-2], self.threshold)
            # activity (docs/methods.md §0.3): epochs whose window is open, per modality
            for i, name in enumerate(self.modalities):
                self.activity_statistics.add(f"inforeg/window_epochs/{name}", float(self.window[i]))
        self._epoch_scalars = {}
        for i, name in enumerate(self.modalities):
            self._epoch_scalars[f"inforeg/trace/{name}"] = float(mean[i])
        if self.network is not None:
            self.reference = self._snapshot(self.network)

    def scalars(self) -> dict[str, torch.Tensor | float]:
        """The last step's decisions and the last epoch's Fisher traces (``inforeg/...``)."""
        return {**self._epoch_scalars, **self._scalars}

    def state_dict(self) -> dict[str, Any]:
        return {
            "trace_sum": self.trace_sum.clone(),
            "trace_steps": self.trace_steps,
            "traces": [t.clone() for t in self.traces],
            "window": self.window.clone(),
            "reference": None if self.reference is None else [[t.cpu().clone() for t in r] for r in self.reference],
            "regulated_steps": self.regulated_steps.clone(),
            "activity": self.activity_statistics.state_dict(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.trace_sum = state_dict["trace_sum"].clone().double()
        self.trace_steps = int(state_dict["trace_steps"])
        self.traces = [t.clone().double() for t in state_dict["traces"]]
        self.window = state_dict["window"].clone().bool()
        reference = state_dict.get("reference")
        if reference is not None:
            device = None
            if self.network is not None:
                device = next(self.network.parameters()).device
            self.reference = [[t.clone().to(device) if device else t.clone() for t in r] for r in reference]
        self.regulated_steps = state_dict["regulated_steps"].clone().float()
        self.activity_statistics.load_state_dict(state_dict.get("activity"))
