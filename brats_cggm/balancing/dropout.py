"""Modality dropout (``docs/methods.md`` §7.2): a baseline that zeroes a modality's features per sample.

During training, every sample's features of every modality are zeroed independently with
probability ``p`` before fusion (all levels of a multi-scale encoder together). By default the kept
features are **not** rescaled: at inference every modality is present, and the fusion module of the
BraTS network normalises its input (instance norm), so an inverted-dropout factor would only change
the scale the fusion sees during training. ``rescale=True`` multiplies the kept features by
``1/(1 − p)`` (inverted dropout) instead. With ``keep_one`` (default) a sample whose modalities were all
dropped keeps one, chosen uniformly, so the fused prediction always has an input.

Task-agnostic: features are a tensor (batch first) or a list of such tensors per modality.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from brats_cggm.balancing.registry import register_balancer
from brats_cggm.core.balancer import Balancer

__all__ = ["ModalityDropoutBalancer", "apply_sample_scale", "dropout_masks"]


def apply_sample_scale(features: Any, scale: torch.Tensor) -> Any:
    """Multiply every tensor of one modality's ``features`` by a per-sample factor (new tensors).

    Args:
        features: a tensor ``(B, ...)`` or a (nested) list/tuple of such tensors.
        scale: ``(B,)`` factors.
    """
    if isinstance(features, torch.Tensor):
        shape = (features.shape[0],) + (1,) * (features.ndim - 1)
        return features * scale.to(features.device, features.dtype).view(shape)
    return type(features)(apply_sample_scale(f, scale) for f in features)


def batch_size_of(features: Any) -> int:
    """Batch size of a modality's features (a tensor or a nested list of tensors)."""
    while not isinstance(features, torch.Tensor):
        features = features[0]
    return int(features.shape[0])


def dropout_masks(
    probabilities: torch.Tensor, batch_size: int, keep_one: bool = True, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Per-sample keep masks ``(M, B)``: entry ``[m, n]`` is 0 where modality m of sample n is dropped.

    Args:
        probabilities: ``(M,)`` drop probability per modality.
        batch_size: B.
        keep_one: where a sample would lose every modality, keep one chosen uniformly.
        generator: random generator (the global one when None).
    """
    num = probabilities.numel()
    draws = torch.rand(num, batch_size, generator=generator)
    keep = (draws >= probabilities.float().view(num, 1)).float()
    if keep_one:
        empty = keep.sum(0) == 0
        if empty.any():
            pick = torch.randint(num, (int(empty.sum()),), generator=generator)
            keep[pick, torch.nonzero(empty).flatten()] = 1.0
    return keep


@register_balancer("dropout")
class ModalityDropoutBalancer(Balancer):
    """Modality dropout as a balancer plug-in (a feature hook; no gradient edits).

    Args:
        modalities: modality names, in the network's encoder order.
        p: drop probability of each modality's features per sample.
        rescale: multiply kept features by ``1/(1 − p)`` (inverted dropout); False by default.
        keep_one: never drop every modality of a sample.
        start_epoch: number of epochs trained without dropout.
    """

    def __init__(
        self,
        modalities: Sequence[str],
        p: float = 0.25,
        rescale: bool = False,
        keep_one: bool = True,
        start_epoch: int = 0,
    ) -> None:
        super().__init__(modalities)
        if not 0.0 <= p < 1.0:
            raise ValueError(f"p must be in [0, 1), got {p}")
        self.p, self.rescale, self.keep_one, self.start_epoch = (
            float(p),
            bool(rescale),
            bool(keep_one),
            int(start_epoch),
        )
        self.dropped = torch.zeros(len(self.modalities))
        self.steps = 0

    def feature_hook(self, epoch: int) -> Callable[[list], list] | None:
        if epoch <= self.start_epoch or self.p == 0.0:
            self._scalars = {f"dropout/rate/{m}": 0.0 for m in self.modalities}
            return None
        return self._drop

    def _drop(self, features: list) -> list:
        batch = batch_size_of(features[0])
        keep = dropout_masks(torch.full((len(features),), self.p), batch, self.keep_one)
        factor = 1.0 / (1.0 - self.p) if self.rescale else 1.0
        self.steps += 1
        rate = 1.0 - keep.mean(1)
        self.dropped += rate
        self._scalars = {f"dropout/rate/{m}": float(rate[i]) for i, m in enumerate(self.modalities)}
        return [apply_sample_scale(f, keep[i] * factor) for i, f in enumerate(features)]

    def state_dict(self) -> dict[str, Any]:
        return {"dropped": self.dropped.clone(), "steps": self.steps}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.dropped = state_dict["dropped"].clone().float()
        self.steps = int(state_dict["steps"])
