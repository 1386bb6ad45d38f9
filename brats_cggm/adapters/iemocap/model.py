"""The IEMOCAP network: per-modality transformer encoders, transformer fusion, a four-class head."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from brats_cggm.adapters.common import MultimodalTransformer

__all__ = ["build_iemocap_network"]


def build_iemocap_network(
    input_dims: Mapping[str, int],
    modalities: Sequence[str] = ("text", "audio", "vision"),
    num_classes: int = 4,
    d_model: int = 64,
    encoder_layers: int = 2,
    fusion_layers: int = 2,
    num_heads: int = 4,
    hidden_dim: int = 64,
    dropout: float = 0.1,
) -> MultimodalTransformer:
    """A :class:`MultimodalTransformer` with ``num_classes`` outputs."""
    return MultimodalTransformer(
        modalities, input_dims, num_classes, d_model, encoder_layers, fusion_layers, num_heads, hidden_dim, dropout
    )
