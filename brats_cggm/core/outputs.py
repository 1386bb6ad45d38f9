"""What a multimodal network hands to the training engine."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["FeatureHook", "MultimodalOutput"]

#: Called with the per-modality features right before fusion; returns the (possibly edited) features.
#: ``features[i]`` is whatever modality ``i``'s encoder produced (a tensor or a list of tensors).
FeatureHook = Callable[[list], list]


@dataclass
class MultimodalOutput:
    """Outputs of ``forward_features`` of a network with one encoder per modality.

    Attributes:
        logits: the fused prediction, as ``forward`` returns it.
        features: one entry per modality: the encoder's output (a tensor, or a list of tensors for
            multi-scale encoders), fed to the auxiliary heads.
        head_input: the input of the fusion head's last layer (``network.output_layer``), so a
            balancer can re-apply that layer to a detached copy.
    """

    logits: torch.Tensor
    features: list
    head_input: torch.Tensor
