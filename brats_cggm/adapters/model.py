"""The sequence networks of the adapters: per-modality transformer encoders, transformer fusion, heads.

:class:`MultimodalTransformer` is the network of every sequence task (MOSI with one output, IEMOCAP and
Food-101 with one per class); its last layer (``output_layer``, a plain ``nn.Linear``) is applied last.
The auxiliary classifiers f_i (``docs/methods.md`` §1.1: one self-attention layer and a linear layer per
modality, last layer shaped like ``output_layer``) are :class:`SequenceAuxiliaryHeads`, kept outside the
network; :class:`SequencePredictor` returns the fused and the auxiliary predictions for evaluation.
The ``Sequence`` prefix tells these apart from BraTS's volume counterparts in ``brats_cggm.brats.model``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from brats_cggm.core.availability import check_availability, fused_modalities, select_rows
from brats_cggm.core.outputs import MultimodalOutput

__all__ = [
    "FrozenBackbone",
    "MultimodalTransformer",
    "SequenceAuxiliaryHeads",
    "SequenceEncoder",
    "SequenceHead",
    "SequencePredictor",
    "masked_mean",
    "sinusoidal_positions",
]


def sinusoidal_positions(length: int, dim: int, device: torch.device | None = None) -> torch.Tensor:
    """The transformer's sinusoidal position encoding, shape ``(length, dim)``."""
    position = torch.arange(length, device=device, dtype=torch.float32).unsqueeze(1)
    div = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim, device=device)
    pe[:, 0::2] = torch.sin(position * div)
    pe[:, 1::2] = torch.cos(position * div)[:, : dim // 2]
    return pe


def _transformer_encoder(d_model: int, num_layers: int, num_heads: int, dropout: float) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(
        d_model, num_heads, dim_feedforward=4 * d_model, dropout=dropout, batch_first=True, norm_first=True
    )
    return nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)


def _padding_mask(mask: torch.Tensor | None) -> torch.Tensor | None:
    # PyTorch wants True at padded positions; keep one position per row so that attention stays defined
    if mask is None:
        return None
    mask = mask.bool().clone()
    mask[:, 0] |= ~mask.any(1)
    return ~mask


def masked_mean(h: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over the sequence axis of ``(B, L, D)``, over valid positions only when ``mask`` is given."""
    if mask is None:
        return h.mean(1)
    weight = mask.to(h.dtype).unsqueeze(-1)
    return (h * weight).sum(1) / weight.sum(1).clamp_min(1.0)


class FrozenBackbone(nn.Module):
    """A frozen pretrained ``transformers`` model: input dict (or pixel tensor) → ``last_hidden_state``.

    Its parameters never require gradients and it stays in eval mode, so a balancer that scales the
    encoder's gradients only touches the trainable layers on top.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.model.eval()
        config = getattr(model, "config", None)
        if config is None:
            raise TypeError(f"{type(model).__name__} has no config (not a transformers model).")
        self.hidden_size = int(config.hidden_size)

    def train(self, mode: bool = True) -> FrozenBackbone:
        super().train(False)
        return self

    @torch.no_grad()
    def forward(self, x: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(last_hidden_state (B, L, hidden_size), attention mask or None)`` of tokenizer outputs or pixels."""
        if isinstance(x, Mapping):
            out = self.model(**x)
            mask = x.get("attention_mask")
            return out.last_hidden_state, None if mask is None else mask.bool()
        return self.model(pixel_values=x).last_hidden_state, None


class SequenceEncoder(nn.Module):
    """One modality's encoder: (frozen backbone →) linear projection + positions → transformer layers.

    Args:
        in_dim: the input feature size (the backbone's hidden size when there is one).
        d_model: the transformer width.
        num_layers: transformer layers.
        num_heads: attention heads.
        dropout: dropout.
        backbone: an optional :class:`FrozenBackbone` applied first.
    """

    def __init__(
        self,
        in_dim: int,
        d_model: int = 64,
        num_layers: int = 2,
        num_heads: int = 4,
        dropout: float = 0.1,
        backbone: FrozenBackbone | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.in_dim = int(in_dim)
        self.proj = nn.Linear(self.in_dim, d_model)
        self.dropout = nn.Dropout(dropout)
        self.layers = _transformer_encoder(d_model, num_layers, num_heads, dropout)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: Any, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(features (B, L, d_model), mask)``; padded positions (``mask`` False) hold zeros.

        Args:
            x: features ``(B, L, in_dim)`` or ``(B, in_dim)``, or the backbone's inputs.
            mask: ``(B, L)``, True at valid positions (None: all valid, or the backbone's mask).
        """
        if self.backbone is not None:
            x, backbone_mask = self.backbone(x)
            mask = backbone_mask if mask is None else mask
        if x.ndim == 2:  # one pooled vector per sample
            x = x.unsqueeze(1)
        if x.shape[-1] != self.in_dim:
            raise ValueError(f"expected features of size {self.in_dim}, got {tuple(x.shape)}")
        h = self.proj(x.float()) + sinusoidal_positions(x.shape[1], self.proj.out_features, x.device)
        h = self.layers(self.dropout(h), src_key_padding_mask=_padding_mask(mask))
        h = self.norm(h)
        if mask is not None:
            h = h * mask.unsqueeze(-1).to(h.dtype)  # padded positions hold zeros for the heads
        return h, mask


class MultimodalTransformer(nn.Module):
    """Per-modality transformer encoders, a transformer fusion module and a classifier/regressor head.

    Fusion: the encoders' sequences get a learned modality embedding, are concatenated behind a
    learned [CLS] token and pass ``fusion_layers`` transformer layers; the [CLS] output goes through
    ``Linear → ReLU → Dropout`` (its output is ``head_input``) and ``output_layer``.

    Inputs ``x``: a dict ``{modality: tensor (B, L, D) or backbone inputs, "<modality>_mask": (B, L)}``
    or a sequence in modality order.

    Args:
        modalities: modality names, in encoder order.
        input_dims: feature size per modality (dict or sequence); ignored where a backbone is given.
        num_outputs: the prediction width (classes, or 1 for regression).
        d_model: transformer width.
        encoder_layers: transformer layers per modality encoder.
        fusion_layers: transformer layers of the fusion module.
        num_heads: attention heads.
        hidden_dim: width of the head's hidden layer (the input of ``output_layer``).
        dropout: dropout.
        backbones: optional frozen backbones by modality name.
    """

    def __init__(
        self,
        modalities: Sequence[str],
        input_dims: Mapping[str, int] | Sequence[int],
        num_outputs: int,
        d_model: int = 64,
        encoder_layers: int = 2,
        fusion_layers: int = 2,
        num_heads: int = 4,
        hidden_dim: int = 64,
        dropout: float = 0.1,
        backbones: Mapping[str, nn.Module | None] | None = None,
    ) -> None:
        super().__init__()
        self.modalities = tuple(modalities)
        backbones = dict(backbones or {})
        if not isinstance(input_dims, Mapping):
            input_dims = dict(zip(self.modalities, input_dims, strict=True))
        encoders = []
        for name in self.modalities:
            backbone = backbones.get(name)
            if backbone is not None and not isinstance(backbone, FrozenBackbone):
                backbone = FrozenBackbone(backbone)
            in_dim = backbone.hidden_size if backbone is not None else input_dims[name]
            encoders.append(SequenceEncoder(in_dim, d_model, encoder_layers, num_heads, dropout, backbone))
        self.encoders = nn.ModuleList(encoders)
        self.d_model, self.num_heads, self.hidden_dim, self.num_outputs = d_model, num_heads, hidden_dim, num_outputs
        self.dropout_rate = dropout
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d_model))
        self.modality_embedding = nn.Parameter(torch.randn(len(self.modalities), d_model) * 0.02)
        self.fusion = _transformer_encoder(d_model, fusion_layers, num_heads, dropout)
        self.fusion_norm = nn.LayerNorm(d_model)
        self.pre_head = nn.Sequential(nn.Linear(d_model, hidden_dim), nn.ReLU(), nn.Dropout(dropout))
        self.output_layer = nn.Linear(hidden_dim, num_outputs)

    def _inputs(self, x: Any) -> list[tuple[Any, torch.Tensor | None]]:
        if isinstance(x, Mapping):
            missing = [m for m in self.modalities if m not in x]
            if missing:
                raise KeyError(f"inputs lack modalities {missing} (keys: {sorted(x)})")
            return [(x[m], x.get(f"{m}_mask")) for m in self.modalities]
        if len(x) != len(self.modalities):
            raise ValueError(f"expected {len(self.modalities)} inputs, got {len(x)}")
        return [(v, None) for v in x]

    def encode(
        self, x: Any, available: torch.Tensor | None = None
    ) -> tuple[list[torch.Tensor | None], list[torch.Tensor | None]]:
        """Per-modality encoder outputs ``(B, L_i, d_model)`` and their masks, for the samples that have each.

        Args:
            x: the inputs (see the class docstring).
            available: ``(B, M)`` boolean availability mask (None: every modality of every sample).

        Returns:
            ``(features, masks)``: an absent sample's rows are zeros with an all-False mask; a modality no
            sample has is None in both (its encoder did not run).
        """
        features: list[torch.Tensor | None] = []
        masks: list[torch.Tensor | None] = []
        for i, (encoder, (value, mask)) in enumerate(zip(self.encoders, self._inputs(x))):
            rows = None if available is None else available[:, i]
            if rows is None or bool(rows.all()):
                h, mask = encoder(value, mask)
            elif bool(rows.any()):
                h, mask = encoder(select_rows(value, rows), None if mask is None else mask[rows.to(mask.device)])
                h, mask = _scatter_sequence(h, mask, rows)
            else:
                h = mask = None
            features.append(h)
            masks.append(mask)
        return features, masks

    def fuse(
        self,
        features: Sequence[torch.Tensor | None],
        masks: Sequence[torch.Tensor | None],
        fused: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The head input ``(B, hidden_dim)`` from the per-modality features.

        Absent modalities take no part: their tokens are left out of the attention (key padding), which
        renormalises the attention over the present ones.

        Args:
            features: per-modality encoder outputs (None: absent from every sample).
            masks: their valid positions (None: all valid).
            fused: ``(B, M)`` booleans, the modalities each sample fuses (None: all given).
        """
        reference = next(h for h in features if h is not None)
        batch = reference.shape[0]
        tokens = [self.cls_token.expand(batch, -1, -1)]
        valid = [torch.ones(batch, 1, dtype=torch.bool, device=reference.device)]
        for i, (h, mask) in enumerate(zip(features, masks)):
            if h is None:
                continue
            tokens.append(h + self.modality_embedding[i])
            keep = mask if mask is not None else torch.ones(h.shape[:2], dtype=torch.bool, device=h.device)
            if fused is not None:
                keep = keep & fused[:, i : i + 1].to(keep.device)
            valid.append(keep)
        h = self.fusion(torch.cat(tokens, 1), src_key_padding_mask=~torch.cat(valid, 1))
        return self.pre_head(self.fusion_norm(h[:, 0]))

    def forward(self, x: Any) -> torch.Tensor:
        """The fused prediction ``(B, num_outputs)``."""
        features, masks = self.encode(x)
        return self.output_layer(self.fuse(features, masks))

    def forward_features(
        self, x: Any, available: torch.Tensor | None = None, fusion_mask: torch.Tensor | None = None
    ) -> MultimodalOutput:
        """Forward pass returning the logits, the encoder outputs and the head input.

        Args:
            x: the inputs (see the class docstring); an absent modality's entry is never read.
            available: ``(B, M)`` boolean mask of the modalities each sample has (None: all); an absent
                modality's encoder does not run and its tokens take no part in fusion.
            fusion_mask: ``(B, M)`` booleans, the modalities the fusion may use in this step (a balancer's
                drop); a sample it would leave without a modality fuses all its available ones.
        """
        batch, num = _batch_size(x, self.modalities), len(self.modalities)
        if available is not None:
            available = check_availability(available, batch, num)
        features, masks = self.encode(x, available)
        head_input = self.fuse(features, masks, fused_modalities(available, fusion_mask, batch, num))
        return MultimodalOutput(
            logits=self.output_layer(head_input), features=features, head_input=head_input, available=available
        )


def _batch_size(x: Any, modalities: Sequence[str]) -> int:
    """The batch size of the network's inputs (a dict by modality or a sequence; backbone inputs may be dicts)."""
    value = x[modalities[0]] if isinstance(x, Mapping) else x[0]
    while not isinstance(value, torch.Tensor):
        value = next(iter(value.values())) if isinstance(value, Mapping) else value[0]
    return int(value.shape[0])


def _scatter_sequence(
    h: torch.Tensor, mask: torch.Tensor | None, rows: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The full batch of a subset's encoder outputs: zeros and an all-False mask for the other samples."""
    index = rows.to(h.device).nonzero().flatten()
    full = h.new_zeros((rows.shape[0], *h.shape[1:])).index_put((index,), h)
    valid = torch.zeros(full.shape[:2], dtype=torch.bool, device=h.device)
    subset_valid = mask if mask is not None else torch.ones(h.shape[:2], dtype=torch.bool, device=h.device)
    return full, valid.index_put((index,), subset_valid.to(h.device))


class SequenceHead(nn.Module):
    """An auxiliary classifier f_i: self-attention layer(s), mean pooling, ``Linear → ReLU``, ``output_layer``.

    Zero rows (padding, see :class:`SequenceEncoder`) are left out of the pooling.
    """

    def __init__(
        self, d_model: int, hidden_dim: int, num_outputs: int, num_layers: int = 1, num_heads: int = 4, dropout=0.1
    ) -> None:
        super().__init__()
        self.layers = _transformer_encoder(d_model, num_layers, num_heads, dropout)
        self.norm = nn.LayerNorm(d_model)
        self.hidden = nn.Sequential(nn.Linear(d_model, hidden_dim), nn.ReLU(), nn.Dropout(dropout))
        self.output_layer = nn.Linear(hidden_dim, num_outputs)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_outputs)`` of one modality's encoder output ``h`` ``(B, L, d_model)``."""
        mask = h.detach().abs().sum(-1) > 0
        h = self.norm(self.layers(h, src_key_padding_mask=_padding_mask(mask)))
        return self.output_layer(self.hidden(masked_mean(h, mask)))


class SequenceAuxiliaryHeads(nn.ModuleList):
    """One :class:`SequenceHead` per modality, kept outside the network; ``forward(features) -> list``."""

    def __init__(
        self,
        modalities: Sequence[str],
        d_model: int,
        hidden_dim: int,
        num_outputs: int,
        num_layers: int = 1,
        num_heads: int = 4,
        dropout: float = 0.1,
    ) -> None:
        super().__init__(
            SequenceHead(d_model, hidden_dim, num_outputs, num_layers, num_heads, dropout) for _ in modalities
        )
        self.modalities = tuple(modalities)

    @classmethod
    def for_network(cls, network: MultimodalTransformer, num_layers: int = 1) -> SequenceAuxiliaryHeads:
        """Heads matched to ``network`` (their ``output_layer`` has the shape of the network's)."""
        return cls(
            network.modalities,
            network.d_model,
            network.hidden_dim,
            network.num_outputs,
            num_layers,
            network.num_heads,
            network.dropout_rate,
        )

    def forward(self, features: Sequence[torch.Tensor | None]) -> list[torch.Tensor | None]:
        """Each modality's logits from its encoder output, in modality order (None for an absent modality)."""
        if len(features) != len(self):
            raise ValueError(f"expected features for {len(self)} modalities, got {len(features)}.")
        return [None if h is None else head(h) for head, h in zip(self, features)]


class SequencePredictor(nn.Module):
    """Evaluation predictor: ``{"pred": fused logits, "pred_<modality>": head logits}`` from one pass."""

    def __init__(self, network: MultimodalTransformer, heads: SequenceAuxiliaryHeads) -> None:
        super().__init__()
        if len(heads) != len(network.modalities):
            raise ValueError(f"{len(heads)} auxiliary heads for {len(network.modalities)} modalities.")
        self.network = network
        self.heads = heads

    def forward(self, x: Any) -> dict[str, torch.Tensor]:
        """The fused and the auxiliary heads' logits of one forward pass of the network."""
        out = self.network.forward_features(x)
        preds = {"pred": out.logits}
        for name, logits in zip(self.network.modalities, self.heads([f.detach() for f in out.features])):
            assert logits is not None  # every modality is present
            preds[f"pred_{name}"] = logits
        return preds
