"""The contract between the task-agnostic engine and a task (BraTS, Food-101, MOSI, IEMOCAP)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

__all__ = ["Task"]


@runtime_checkable
class Task(Protocol):
    """What the engine needs to know about a task; the engine never imports a concrete task.

    ``loss`` trains both the fused network and the auxiliary heads (each auxiliary head on the
    targets returned by ``aux_targets``); ``utilization`` is CGGM's ε and the per-modality score
    other balancers read.
    """

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Scalar task loss of ``logits`` against ``targets``."""
        ...

    def aux_targets(self, targets: torch.Tensor, aux_logits: torch.Tensor) -> torch.Tensor:
        """``targets`` matched to an auxiliary head's output (e.g. down-sampled to its resolution)."""
        ...

    def utilization(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The batch's utilization score ε of one head (a 0-dim tensor, higher is better)."""
        ...
