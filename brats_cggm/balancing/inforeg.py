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

The authors' code (GeWu-Lab/InfoReg_CVPR2025) differs from the above in four ways, each an option
(``docs/methods.md`` §3.3): the trace as the sum over convolution and linear layers of the mean squared weight
gradient (``trace="layer_mean"``), the window test on 10-epoch moving averages (``window_average=10``),
``α = β·exp(tanh Δ)`` (``alpha_form="beta_exp"``) and auxiliary predictions that train the encoders
(``detach_heads=False``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from brats_cggm.balancing.registry import register_balancer
from brats_cggm.core.balancer import Balancer, StepContext
from brats_cggm.core.distributed import all_reduce_mean
from brats_cggm.core.modules import module_list

__all__ = [
    "ALPHA_FORMS",
    "TRACES",
    "InfoRegBalancer",
    "averaged_window",
    "inforeg_alpha",
    "layer_weight_grads",
    "performance_gaps",
    "prime_window",
    "trace_estimate",
]

#: How one step's information amount is read from an encoder's gradients (``InfoRegBalancer(trace=...)``).
TRACES = ("norm", "layer_mean")
#: How α is computed from the gap (``InfoRegBalancer(alpha_form=...)``).
ALPHA_FORMS = ("exp_beta", "beta_exp")


def prime_window(trace_prev: torch.Tensor, trace_prev2: torch.Tensor, threshold: float) -> torch.Tensor:
    """The prime-learning-window test ``(Tr_{t−1} − Tr_{t−2}) / Tr_{t−1} > K`` (``docs/methods.md`` §3.1).

    Args:
        trace_prev: Tr of the last finished epoch per modality, shape ``(M,)``.
        trace_prev2: Tr of the epoch before, shape ``(M,)``.
        threshold: K.

    Returns:
        ``(M,)`` booleans; False where ``Tr_{t−1}`` is 0.
    """
    prev = trace_prev.float()
    safe = torch.where(prev > 0, prev, torch.ones_like(prev))
    return (prev > 0) & ((prev - trace_prev2.float()) / safe > threshold)


def averaged_window(traces: Sequence[torch.Tensor], threshold: float, window_average: int = 1) -> torch.Tensor | None:
    """The window test on moving averages of the epoch traces (``docs/methods.md`` §3.1, §3.3).

    ``Tr_{t−1}`` and ``Tr_{t−2}`` of :func:`prime_window` become the means of the last ``n`` epoch traces and of
    the ``n`` before the last (over the epochs that exist while fewer are finished); ``n = 1`` is the plain
    test, ``n = 10`` the authors' code.

    Args:
        traces: Tr per finished epoch, each ``(M,)``, oldest first.
        threshold: K.
        window_average: n, the number of epochs averaged.

    Returns:
        ``(M,)`` booleans, or None while fewer than two epochs are finished.
    """
    if len(traces) < 2:
        return None
    n = max(int(window_average), 1)
    recent = torch.stack(list(traces[-n:])).double().mean(0)
    before = torch.stack(list(traces[-n - 1 : -1])).double().mean(0)
    return prime_window(recent, before, threshold)


def layer_weight_grads(encoder: nn.Module) -> list[torch.Tensor]:
    """The gradients of an encoder's convolution and linear **weights** (the layers the authors' code reads).

    Args:
        encoder: one modality's encoder.

    Returns:
        One gradient per such layer that received one.
    """
    return [
        m.weight.grad
        for m in encoder.modules()
        if isinstance(m, nn.modules.conv._ConvNd | nn.Linear) and m.weight.grad is not None
    ]


def trace_estimate(grads: Sequence[torch.Tensor], mode: str = "norm") -> float:
    """One step's estimate of the trace of an encoder's Fisher information (``docs/methods.md`` §3.1).

    Args:
        grads: ``"norm"``: every gradient of the encoder; ``"layer_mean"``: those of
            :func:`layer_weight_grads`.
        mode: ``"norm"``: ``‖∇θ‖² = Σ_p Σ g²``; ``"layer_mean"``: ``Σ_layers mean(g²)`` (the authors' code).

    Returns:
        The estimate (0 without gradients).
    """
    if mode not in TRACES:
        raise ValueError(f"trace must be one of {TRACES}, got {mode!r}")
    if not grads:
        return 0.0
    if mode == "norm":
        return float(torch.stack(torch._foreach_norm(list(grads))).double().pow(2).sum())
    return float(sum(g.double().pow(2).mean() for g in grads))


def performance_gaps(scores: torch.Tensor) -> torch.Tensor:
    """Δ_m = mean of ``s_m − s_{m'}`` over the m' with ``s_{m'} < s_m`` (0 if m outperforms none)."""
    scores = scores.float()
    diff = scores.view(-1, 1) - scores.view(1, -1)  # [m, m'] = s_m - s_m'
    better = diff > 0
    count = better.sum(1)
    total = torch.where(better, diff, torch.zeros_like(diff)).sum(1)
    return torch.where(count > 0, total / count.clamp_min(1), torch.zeros_like(total))


def inforeg_alpha(gaps: torch.Tensor, beta: float | torch.Tensor, form: str = "exp_beta") -> torch.Tensor:
    """The regulation strength α per modality (``docs/methods.md`` §3.2).

    Args:
        gaps: Δ per modality, shape ``(M,)``.
        beta: β, one for every modality or one per modality ``(M,)``.
        form: ``"exp_beta"``: ``α = exp(β·tanh Δ)`` (the paper); ``"beta_exp"``: ``α = β·exp(tanh Δ)`` (the
            authors' code, with β 0.95 and 0.1 for its two modalities).

    Returns:
        α, shape ``(M,)``.
    """
    if form not in ALPHA_FORMS:
        raise ValueError(f"alpha_form must be one of {ALPHA_FORMS}, got {form!r}")
    squashed = torch.tanh(gaps.float())
    beta = torch.as_tensor(beta, dtype=torch.float32)
    return torch.exp(beta * squashed) if form == "exp_beta" else beta * torch.exp(squashed)


@register_balancer("inforeg")
class InfoRegBalancer(Balancer):
    """InfoReg as a balancer plug-in (gradient edits after backward, epoch-level references).

    Args:
        modalities: modality names, in the network's encoder order.
        beta: β of α (a float, or one per modality).
        threshold: K, the relative growth of the information amount that opens the window.
        start_epoch: number of epochs trained without regulation (the trace is still tracked).
        trace: ``"norm"`` (``‖∇θ‖²`` of the whole encoder) or ``"layer_mean"`` (the authors' code: the sum over
            its convolution and linear layers of the mean of the squared weight gradient).
        window_average: epochs averaged on each side of the window test (1: consecutive epochs; 10: the
            authors' code).
        alpha_form: ``"exp_beta"`` (``exp(β·tanh Δ)``, the paper) or ``"beta_exp"`` (``β·exp(tanh Δ)``, the
            authors' code).
        detach_heads: whether the auxiliary heads see detached encoder features (True) or train through the
            encoders (False: the authors' code, whose uni-modal losses reach the encoders); sets this
            instance's ``detach_aux_features``, which the trainer reads.
    """

    def __init__(
        self,
        modalities: Sequence[str],
        beta: float | Sequence[float] = 0.9,
        threshold: float = 0.04,
        start_epoch: int = 0,
        trace: str = "norm",
        window_average: int = 1,
        alpha_form: str = "exp_beta",
        detach_heads: bool = True,
    ) -> None:
        super().__init__(modalities)
        if len(self.modalities) < 2:
            raise ValueError(f"InfoReg needs at least two modalities, got {self.modalities}")
        if trace not in TRACES:
            raise ValueError(f"trace must be one of {TRACES}, got {trace!r}")
        if alpha_form not in ALPHA_FORMS:
            raise ValueError(f"alpha_form must be one of {ALPHA_FORMS}, got {alpha_form!r}")
        if int(window_average) < 1:
            raise ValueError(f"window_average must be at least 1, got {window_average}")
        num = len(self.modalities)
        betas = torch.as_tensor(beta, dtype=torch.float32).flatten()
        if betas.numel() not in (1, num):
            raise ValueError(f"beta needs one value or one per modality ({num}), got {betas.numel()}")
        self.beta = betas.expand(num).clone()
        self.threshold, self.start_epoch = float(threshold), int(start_epoch)
        self.trace, self.window_average, self.alpha_form = trace, int(window_average), alpha_form
        self.detach_aux_features = bool(detach_heads)
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
        encoders = module_list(ctx.network, "encoders")
        for i in range(num):
            grads = self.encoder_grads(ctx.network, i) if self.trace == "norm" else layer_weight_grads(encoders[i])
            squared[i] = trace_estimate(grads, self.trace)
        self.trace_sum += squared
        self.trace_steps += 1

        gaps = performance_gaps(ctx.utilization.detach().float().cpu())
        alphas = inforeg_alpha(gaps, self.beta, self.alpha_form)
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
        window = averaged_window(self.traces, self.threshold, self.window_average)
        if window is not None:
            self.window = window
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
