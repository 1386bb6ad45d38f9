"""The balancer protocol: hooks the engine calls at fixed points of a training step."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from brats_cggm.core.activity import ActivityStatistics
from brats_cggm.core.modules import module_list
from brats_cggm.core.outputs import MultimodalOutput

__all__ = ["Balancer", "StepContext"]


@dataclass
class StepContext:
    """Everything a balancer may read during one training step.

    Attributes:
        network: the multimodal network, unwrapped from DDP/compile (``encoders``, ``output_layer``).
        heads: the auxiliary heads (``heads[i].output_layer``).
        task: the task (``loss``, ``aux_targets``, ``utilization``).
        inputs: the batch inputs.
        targets: the batch targets.
        output: the network's :class:`MultimodalOutput`.
        task_loss: the fused prediction's loss.
        aux_logits: one prediction per modality from the auxiliary heads, for the samples that have the
            modality; None for a modality no sample of the batch has (its head did not run).
        aux_targets: ``targets`` matched to the auxiliary predictions (of the whole batch).
        aux_losses: one loss per auxiliary head; a constant 0 (no gradient) where the head did not run.
        utilization: ε per modality on this batch (over the samples that have the modality), averaged over
            the ranks that saw it; a modality absent from the whole step on every rank keeps the ε it last
            had (shape ``(M,)``).
        present: ``(M,)`` booleans: whether modality ``i``'s head ran on this rank in this step.
        epoch: the current epoch (1-based, as ignite counts).
        iteration: the global iteration (1-based).
    """

    network: nn.Module
    heads: nn.ModuleList
    task: Any
    inputs: Any
    targets: torch.Tensor
    output: MultimodalOutput
    task_loss: torch.Tensor
    aux_logits: list[torch.Tensor | None]
    aux_targets: torch.Tensor
    aux_losses: list[torch.Tensor]
    utilization: torch.Tensor
    epoch: int
    iteration: int
    present: torch.Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Balancer:
    """Base class of the modality-balancing strategies; as it stands, plain joint training.

    The trainer calls :meth:`attach` once; then, each training step, in this order:
    :meth:`fusion_mask` (before the forward pass), :meth:`extra_loss` (after the forward pass and the auxiliary
    heads), :meth:`backward`, :meth:`after_backward` (gradient edits, before clipping and the optimizer
    step); and :meth:`epoch_completed` after every epoch. :meth:`activity` is read at every epoch end and when
    training completes (how often and how strongly the balancer acted, ``docs/methods.md`` §0.3). Anything a
    subclass decides from batch statistics must come from ``StepContext.utilization`` (already all-reduced) or
    be all-reduced by the subclass.

    Attributes:
        name: the registry name; also the TensorBoard prefix of :meth:`scalars`.
        detach_aux_features: whether the auxiliary heads see detached encoder features (CGGM) or
            train through the encoders (MMPareto).
        exclude_unfused: whether a sample that :meth:`fusion_mask` leaves without any of its available
            modalities takes no part in the fused prediction's loss of the step (OPM's
            ``all_dropped="exclude"``); otherwise such a sample fuses every modality it has.
        activity_statistics: the run's activity statistics, fed by the subclass (see :meth:`activity`).
    """

    name: str = "joint"
    detach_aux_features: bool = True
    exclude_unfused: bool = False

    def __init__(self, modalities: Sequence[str] = ()) -> None:
        self.modalities = tuple(modalities)
        self._scalars: dict[str, torch.Tensor | float] = {}
        self.activity_statistics = ActivityStatistics()

    @classmethod
    def short_run_kwargs(cls, max_epochs: int) -> dict[str, Any]:
        """Constructor arguments that fit the method's epoch schedule into a run of ``max_epochs`` epochs.

        The papers schedule warm-ups and diagnoses in epochs of runs of 50 or more; a comparison at a
        smaller budget, or a one-epoch benchmark, needs the method to act within it. Overlays and
        explicit arguments keep the papers' schedules; benchmarks and comparisons apply these.

        Args:
            max_epochs: the run's length in epochs.

        Returns:
            Keyword arguments of the constructor; empty for a method without an epoch schedule.
        """
        return {}

    def attach(self, engine: Any) -> None:
        """Called once by the trainer it is given to (a balancer may keep the engine, e.g. to read data)."""

    def fusion_mask(self, epoch: int, batch_size: int) -> torch.Tensor | None:
        """The modalities the fusion may use in this step, ``(B, M)`` booleans (e.g. OPM's drop), or None.

        The network fuses the modalities that are both available and in this mask, with the one fusion
        rule of :mod:`brats_cggm.core.availability`; the encoders and auxiliary heads still see every
        available modality.
        """
        return None

    def extra_loss(self, ctx: StepContext) -> torch.Tensor | None:
        """A loss term added to the task loss (e.g. CGGM's λ·L_gm), or None."""
        return None

    def backward(self, ctx: StepContext, loss: torch.Tensor) -> None:
        """Back-propagate ``loss`` (the task loss, the extra loss and the auxiliary losses)."""
        loss.backward()

    def after_backward(self, ctx: StepContext) -> None:
        """Edit gradients after the backward pass, before clipping and the optimizer step."""

    def epoch_completed(self, epoch: int) -> None:
        """Called after every training epoch (re-initialisation, epoch-level references)."""

    def scalars(self) -> dict[str, torch.Tensor | float]:
        """The last step's decisions, keyed by TensorBoard tag (``<name>/...``)."""
        return self._scalars

    def activity(self) -> dict[str, float]:
        """How often and how strongly the balancer acted so far in the run, as flat ``name → number`` entries.

        The summary of :attr:`activity_statistics` (:meth:`~brats_cggm.core.activity.ActivityStatistics.summary`):
        names ``<balancer>/<quantity>[/<modality>][/<statistic>]``. No-op default: a balancer that feeds
        nothing (joint training) reports ``{}``. A subclass that feeds it keeps its state in
        :meth:`state_dict` (``"activity"``), so a resumed run reports the same numbers.

        Returns:
            The statistics; TensorBoard logs them as ``activity/<name>`` at every epoch end and ``metrics.json``
            holds the final ones under ``"activity"``.
        """
        return self.activity_statistics.summary()

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly after a restart."""
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    def encoder_parameters(self, network: nn.Module, index: int) -> list[nn.Parameter]:
        """The parameters of modality ``index``'s encoder that received a gradient."""
        return [p for p in module_list(network, "encoders")[index].parameters() if p.grad is not None]

    def encoder_grads(self, network: nn.Module, index: int) -> list[torch.Tensor]:
        """The gradients of modality ``index``'s encoder (of the parameters that received one)."""
        return [p.grad for p in module_list(network, "encoders")[index].parameters() if p.grad is not None]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(modalities={self.modalities})"
