"""What a multimodal network hands to the training engine."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["MultimodalOutput"]


@dataclass
class MultimodalOutput:
    """Outputs of ``forward_features`` of a network with one encoder per modality.

    Attributes:
        logits: the fused prediction, as ``forward`` returns it.
        features: one entry per modality: the encoder's output (a tensor, or a list of tensors for
            multi-scale encoders), fed to the auxiliary heads.
        head_input: the input of the fusion head's last layer (``network.output_layer``), so a
            balancer can re-apply that layer to a detached copy.
        available: the ``(B, M)`` availability mask the network was given (None: every modality of every
            sample); ``features[i]`` holds zeros for the samples without modality ``i``, and is None when no
            sample has it.
    """

    logits: torch.Tensor
    features: list
    head_input: torch.Tensor
    available: torch.Tensor | None = None
