"""Missing-modality training: a training option that composes with every balancer.

Each training step, every sample's modalities are drawn absent with probability ``p`` each
(:func:`~brats_cggm.core.availability.draw_availability`, never all of them with ``keep_one``), and the
network is trained on that availability mask: the absent encoders do not run, fusion rescales the present
ones and the absent modalities' auxiliary heads give no prediction and no loss. This is the definition of
absence that inference (``--missing-modality drop``), the Shapley valuation and the subset robustness use.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from brats_cggm.core.availability import draw_availability

__all__ = ["ModalityDropout"]


class ModalityDropout:
    """Draws the training steps' availability masks and keeps count of what it dropped.

    Args:
        modalities: modality names, in the network's order.
        p: absence probability of each modality of each sample; 0 turns the option off.
        keep_one: never drop every modality of a sample (one, chosen uniformly, stays).
        start_epoch: epochs trained with every modality before dropping starts.

    Attributes:
        dropped: per modality, how many samples were trained without it.
        samples: how many samples were drawn.
        utilization: per modality, the last ε measured on a step that had it (a step without the modality
            on any rank reports this value, so ε-driven balancers see no change instead of a gap).
    """

    def __init__(self, modalities: Sequence[str], p: float = 0.0, keep_one: bool = True, start_epoch: int = 0) -> None:
        if not 0.0 <= p < 1.0:
            raise ValueError(f"modality_dropout: p must be in [0, 1), got {p}")
        if p > 0 and len(modalities) < 2:
            raise ValueError(f"modality_dropout needs at least two modalities, got {tuple(modalities)}")
        self.modalities = tuple(modalities)
        self.p, self.keep_one, self.start_epoch = float(p), bool(keep_one), int(start_epoch)
        self.dropped = torch.zeros(len(self.modalities))
        self.samples = 0
        self._last_rate = torch.zeros(len(self.modalities))
        self.utilization = torch.zeros(len(self.modalities))

    def is_active(self, epoch: int) -> bool:
        """Whether modalities are dropped in (1-based) ``epoch``."""
        return self.p > 0 and epoch > self.start_epoch

    def sample(self, batch_size: int) -> torch.Tensor:
        """A random availability mask ``(B, M)`` (the global torch generator, so a resumed run draws the same)."""
        return draw_availability(batch_size, torch.full((len(self.modalities),), self.p), self.keep_one)

    def draw(self, batch_size: int) -> torch.Tensor:
        """The availability mask ``(B, M)`` of one training step, counted in :attr:`dropped`."""
        available = self.sample(batch_size)
        absent = (~available).sum(0).float()
        self.dropped += absent
        self.samples += batch_size
        self._last_rate = absent / batch_size
        return available

    def carry_utilization(self, utilization: torch.Tensor) -> torch.Tensor:
        """Fill the NaN entries of a step's ε (modalities no rank saw) with their last measured value.

        Args:
            utilization: ``(M,)`` ε of the step, NaN where the modality was absent everywhere.

        Returns:
            ``(M,)`` ε without NaN; the measured entries are remembered.
        """
        seen = ~torch.isnan(utilization)
        carried = self.utilization.to(utilization.device, utilization.dtype)
        filled = torch.where(seen, utilization, carried)
        self.utilization = filled.detach().float().cpu()
        return filled

    def scalars(self) -> dict[str, float]:
        """TensorBoard scalars: the last step's and the run's fraction of samples without each modality."""
        total = max(self.samples, 1)
        scalars = {}
        for i, name in enumerate(self.modalities):
            scalars[f"modality_dropout/step/{name}"] = float(self._last_rate[i])
            scalars[f"modality_dropout/run/{name}"] = float(self.dropped[i]) / total
        return scalars

    def activity(self) -> dict[str, float]:
        """The run's activity (``docs/methods.md`` §0.3): per modality, the fraction of the samples drawn
        that were trained without it, and the number of samples drawn; ``{}`` when the option is off."""
        if self.p <= 0:
            return {}
        total = max(self.samples, 1)
        activity = {
            f"modality_dropout/dropped/{name}": float(self.dropped[i]) / total for i, name in enumerate(self.modalities)
        }
        activity["modality_dropout/samples"] = float(self.samples)
        return activity

    def state_dict(self) -> dict[str, Any]:
        """The counts and the carried ε, so a resumed run continues exactly."""
        return {"dropped": self.dropped.clone(), "samples": self.samples, "utilization": self.utilization.clone()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.dropped = state_dict["dropped"].clone().float()
        self.samples = int(state_dict["samples"])
        self.utilization = state_dict["utilization"].clone().float()

    def __repr__(self) -> str:
        return f"ModalityDropout(p={self.p}, keep_one={self.keep_one}, start_epoch={self.start_epoch})"
