"""Shared pieces of the sequence-task adapters (Food-101, CMU-MOSI, IEMOCAP).

Networks: one transformer encoder per modality, a transformer fusion module and a head whose last
layer (``output_layer``, a plain ``nn.Linear``) is applied last; auxiliary heads (METHODS §1.1: one
self-attention layer + a linear layer per modality, last layer shaped like ``output_layer``).
Data: samples are dicts ``{modality: (L, D) features, "label": ...}``; :func:`pad_collate` pads each
modality to the longest sequence of the batch and adds ``<modality>_mask`` (True = valid).
Engines: :class:`MultimodalPrepareBatch` turns such a batch into ``(inputs, targets)``;
:class:`PredictionMetric` scores fused or auxiliary predictions over an epoch;
:class:`MetricsWithTestJSONWriter` runs the test evaluation and writes ``metrics.json``.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from ignite.metrics import Metric
from torch import nn
from torch.utils.data import Dataset
from torch.utils.data._utils.collate import default_collate

from brats_cggm.engine.handlers import MetricsJSONWriter, _is_scalar, _to_float
from brats_cggm.engine.outputs import FeatureHook, MultimodalOutput

__all__ = [
    "AdapterDataError",
    "AuxiliaryHeads",
    "ClassificationTask",
    "FrozenBackbone",
    "FusedAndAuxiliaryPredictor",
    "H5Features",
    "ListDataset",
    "MetricsWithTestJSONWriter",
    "ModalityEncoder",
    "MultimodalPrepareBatch",
    "MultimodalSplits",
    "MultimodalTransformer",
    "PredictionMetric",
    "SequenceHead",
    "accuracy",
    "check_on_invalid",
    "f1_score",
    "missing_task_overlay",
    "pad_collate",
    "require_dataset_dir",
]

logger = logging.getLogger(__name__)

LABEL_KEY = "label"
ON_INVALID = ("error", "drop")


class AdapterDataError(ValueError):
    """A data set file is missing something or holds something the task cannot use (the message names it)."""


def check_on_invalid(on_invalid: str) -> str:
    if on_invalid not in ON_INVALID:
        raise ValueError(f"on_invalid must be one of {ON_INVALID}, got {on_invalid!r}")
    return on_invalid


def missing_task_overlay(what: str = "data") -> Any:
    """Raised from the generic bundle when no task overlay defined ``what``."""
    raise ValueError(
        f"the multimodal bundle needs a task overlay that defines {what!r}: add one of "
        "configs/tasks/{mosi,iemocap,food101}.yaml to --config_file, and give --dataset_dir"
    )


# ----------------------------------------------------------------------------------------------- data


class H5Features:
    """Lazy reads of one feature file holding an HDF5 dataset per sample (re-opened in each worker process).

    Args:
        path: the ``.h5`` file.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: Any = None
        self._pid: int | None = None

    def file(self) -> Any:
        """The open ``h5py.File`` of this process."""
        import h5py

        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._file

    def __getstate__(self) -> dict:
        return {"path": self.path, "_file": None, "_pid": None}

    def shape(self, name: str) -> tuple[int, ...] | None:
        """The shape of dataset ``name``, or None if the file has none of that name."""
        item = self.file().get(name)
        return None if item is None else tuple(item.shape)

    def read(self, name: str) -> np.ndarray:
        """Dataset ``name`` as float32."""
        return np.asarray(self.file()[name][()], dtype=np.float32)


class ListDataset(Dataset):
    """A map-style data set over a list of sample dicts, or over a loader ``fn(index)``."""

    def __init__(self, samples: Sequence[Any], loader: Callable[[Any], Any] | None = None) -> None:
        self.samples = list(samples)
        self.loader = loader

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Any:
        item = self.samples[index]
        return self.loader(item) if self.loader is not None else item


@dataclass
class MultimodalSplits:
    """What a task's loader returns: the three splits and what the network needs to know about them.

    Attributes:
        train, val, test: the data sets (items: dicts of per-modality features and ``"label"``).
        modalities: modality names, in encoder order.
        input_dims: feature size of each modality (from the data).
        num_outputs: the width of the prediction (classes, or 1 for regression).
        class_names: the class names (classification), index = label.
        collate_fn: the data loaders' collate function.
        info: anything else worth reporting (file names, counts of dropped samples).
    """

    train: Dataset
    val: Dataset
    test: Dataset
    modalities: tuple[str, ...]
    input_dims: dict[str, int]
    num_outputs: int
    class_names: tuple[str, ...] = ()
    collate_fn: Callable = field(default=None)  # type: ignore[assignment]
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.modalities = tuple(self.modalities)
        if self.collate_fn is None:
            self.collate_fn = pad_collate

    def __getitem__(self, split: str) -> Dataset:
        return {"train": self.train, "val": self.val, "test": self.test}[split]

    def report(self) -> dict[str, Any]:
        """What ``metrics.json`` records about the data: split sizes and ``info`` (callables called now).

        Returns:
            ``{"sizes": {split: samples}, **info}`` with values that JSON can hold (others as text).
        """
        info = {k: (v() if callable(v) else v) for k, v in self.info.items()}
        sizes = {"train": len(self.train), "val": len(self.val), "test": len(self.test)}
        return {"sizes": sizes, **{k: _jsonable(v) for k, v in info.items()}}


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def _pad_sequences(values: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = [v.shape[0] for v in values]
    longest = max(lengths)
    out = values[0].new_zeros((len(values), longest, *values[0].shape[1:]))
    mask = torch.zeros(len(values), longest, dtype=torch.bool)
    for i, (v, n) in enumerate(zip(values, lengths)):
        out[i, :n] = v
        mask[i, :n] = True
    return out, mask


def pad_collate(samples: Sequence[Mapping[str, Any] | None]) -> dict[str, Any]:
    """Collate sample dicts: 2-D tensors ``(L, D)`` are zero-padded to the longest ``L`` with a ``<key>_mask``.

    ``None`` samples (unreadable files skipped by a data set) are dropped; other entries go through
    PyTorch's default collate (tokenizer outputs, images, labels).
    """
    samples = [s for s in samples if s is not None]
    if not samples:
        raise AdapterDataError("every sample of a batch was skipped (unreadable files; see the warnings above)")
    batch: dict[str, Any] = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        if isinstance(values[0], torch.Tensor) and values[0].ndim == 2 and key != LABEL_KEY:
            dims = {tuple(v.shape[1:]) for v in values}
            if len(dims) > 1:
                raise AdapterDataError(f"feature sizes of {key!r} disagree within a batch: {sorted(dims)}")
            batch[key], batch[f"{key}_mask"] = _pad_sequences(values)
        else:
            batch[key] = default_collate(values)
    return batch


def _to_device(value: Any, device: Any, non_blocking: bool, **kwargs: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device=device, non_blocking=non_blocking, **kwargs)
    if isinstance(value, Mapping):
        return {k: _to_device(v, device, non_blocking, **kwargs) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_to_device(v, device, non_blocking, **kwargs) for v in value)
    return value


class MultimodalPrepareBatch:
    """``prepare_batch`` for MONAI engines: a dict batch → ``(inputs dict, targets)`` on ``device``.

    Args:
        label_key: the targets' key; every other key is a network input (modalities, masks).
    """

    def __init__(self, label_key: str = LABEL_KEY) -> None:
        self.label_key = label_key

    def __call__(self, batchdata: Mapping[str, Any], device: Any = None, non_blocking: bool = False, **kwargs: Any):
        if self.label_key not in batchdata:
            raise KeyError(f"batch has no {self.label_key!r} entry (keys: {sorted(batchdata)})")
        inputs = {k: v for k, v in batchdata.items() if k != self.label_key}
        inputs = _to_device(inputs, device, non_blocking, **kwargs)
        targets = _to_device(batchdata[self.label_key], device, non_blocking, **kwargs)
        return inputs, targets


# -------------------------------------------------------------------------------------------- models


def sinusoidal_positions(length: int, dim: int, device: torch.device | None = None) -> torch.Tensor:
    """The transformer's sinusoidal position encoding, shape ``(length, dim)``."""
    position = torch.arange(length, device=device, dtype=torch.float32).unsqueeze(1)
    div = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim, device=device)
    pe[:, 0::2] = torch.sin(position * div)
    pe[:, 1::2] = torch.cos(position * div)[:, : dim // 2]
    return pe


def _transformer(d_model: int, num_layers: int, num_heads: int, dropout: float) -> nn.TransformerEncoder:
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
        self.hidden_size = int(model.config.hidden_size)

    def train(self, mode: bool = True) -> FrozenBackbone:
        super().train(False)
        return self

    @torch.no_grad()
    def forward(self, x: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        if isinstance(x, Mapping):
            out = self.model(**x)
            mask = x.get("attention_mask")
            return out.last_hidden_state, None if mask is None else mask.bool()
        return self.model(pixel_values=x).last_hidden_state, None


class ModalityEncoder(nn.Module):
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
        self.layers = _transformer(d_model, num_layers, num_heads, dropout)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: Any, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
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
            encoders.append(ModalityEncoder(in_dim, d_model, encoder_layers, num_heads, dropout, backbone))
        self.encoders = nn.ModuleList(encoders)
        self.d_model, self.num_heads, self.hidden_dim, self.num_outputs = d_model, num_heads, hidden_dim, num_outputs
        self.dropout_rate = dropout
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d_model))
        self.modality_embedding = nn.Parameter(torch.randn(len(self.modalities), d_model) * 0.02)
        self.fusion = _transformer(d_model, fusion_layers, num_heads, dropout)
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

    def encode(self, x: Any) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
        """Per-modality encoder outputs ``(B, L_i, d_model)`` and their masks."""
        outputs = [encoder(value, mask) for encoder, (value, mask) in zip(self.encoders, self._inputs(x))]
        return [h for h, _ in outputs], [m for _, m in outputs]

    def fuse(self, features: Sequence[torch.Tensor], masks: Sequence[torch.Tensor | None]) -> torch.Tensor:
        """The head input ``(B, hidden_dim)`` from the per-modality features."""
        batch = features[0].shape[0]
        tokens = [self.cls_token.expand(batch, -1, -1)]
        valid = [torch.ones(batch, 1, dtype=torch.bool, device=features[0].device)]
        for i, (h, mask) in enumerate(zip(features, masks)):
            tokens.append(h + self.modality_embedding[i])
            valid.append(mask if mask is not None else torch.ones(h.shape[:2], dtype=torch.bool, device=h.device))
        h = self.fusion(torch.cat(tokens, 1), src_key_padding_mask=~torch.cat(valid, 1))
        return self.pre_head(self.fusion_norm(h[:, 0]))

    def forward(self, x: Any) -> torch.Tensor:
        """The fused prediction ``(B, num_outputs)``."""
        features, masks = self.encode(x)
        return self.output_layer(self.fuse(features, masks))

    def forward_features(self, x: Any, feature_hook: FeatureHook | None = None) -> MultimodalOutput:
        """Forward pass returning the logits, the encoder outputs (before the hook) and the head input."""
        features, masks = self.encode(x)
        to_fuse = features
        if feature_hook is not None:
            to_fuse = feature_hook(list(features))
            if len(to_fuse) != len(features):
                raise ValueError(f"feature_hook returned {len(to_fuse)} entries, expected {len(features)}.")
        head_input = self.fuse(to_fuse, masks)
        return MultimodalOutput(logits=self.output_layer(head_input), features=features, head_input=head_input)


class SequenceHead(nn.Module):
    """An auxiliary classifier f_i: self-attention layer(s), mean pooling, ``Linear → ReLU``, ``output_layer``.

    Zero rows (padding, see :class:`ModalityEncoder`) are left out of the pooling.
    """

    def __init__(
        self, d_model: int, hidden_dim: int, num_outputs: int, num_layers: int = 1, num_heads: int = 4, dropout=0.1
    ) -> None:
        super().__init__()
        self.layers = _transformer(d_model, num_layers, num_heads, dropout)
        self.norm = nn.LayerNorm(d_model)
        self.hidden = nn.Sequential(nn.Linear(d_model, hidden_dim), nn.ReLU(), nn.Dropout(dropout))
        self.output_layer = nn.Linear(hidden_dim, num_outputs)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        mask = h.detach().abs().sum(-1) > 0
        h = self.norm(self.layers(h, src_key_padding_mask=_padding_mask(mask)))
        return self.output_layer(self.hidden(masked_mean(h, mask)))


class AuxiliaryHeads(nn.ModuleList):
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
    def for_network(cls, network: MultimodalTransformer, num_layers: int = 1) -> AuxiliaryHeads:
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

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if len(features) != len(self):
            raise ValueError(f"expected features for {len(self)} modalities, got {len(features)}.")
        return [head(h) for head, h in zip(self, features)]


class FusedAndAuxiliaryPredictor(nn.Module):
    """Evaluation predictor: ``{"pred": fused logits, "pred_<modality>": head logits}`` from one pass."""

    def __init__(self, network: nn.Module, heads: AuxiliaryHeads) -> None:
        super().__init__()
        if len(heads) != len(network.modalities):
            raise ValueError(f"{len(heads)} auxiliary heads for {len(network.modalities)} modalities.")
        self.network = network
        self.heads = heads

    def forward(self, x: Any) -> dict[str, torch.Tensor]:
        out = self.network.forward_features(x)
        preds = {"pred": out.logits}
        for name, logits in zip(self.network.modalities, self.heads([f.detach() for f in out.features])):
            preds[f"pred_{name}"] = logits
        return preds


# ------------------------------------------------------------------------------------------- metrics


def accuracy(pred: np.ndarray, target: np.ndarray) -> float:
    """Fraction of equal entries (0 for empty inputs)."""
    pred, target = np.asarray(pred).reshape(-1), np.asarray(target).reshape(-1)
    return float((pred == target).mean()) if target.size else 0.0


def f1_score(pred: np.ndarray, target: np.ndarray, average: str = "weighted", labels: Sequence | None = None) -> float:
    """F1 over classes, ``average`` ``"weighted"`` (by support) or ``"macro"``, as scikit-learn computes it.

    Classes are those in ``labels`` or present in ``target`` ∪ ``pred``; a class with no prediction and
    no target counts 0 (scikit-learn's ``zero_division=0``).
    """
    pred, target = np.asarray(pred).reshape(-1), np.asarray(target).reshape(-1)
    classes = np.unique(np.concatenate([pred, target])) if labels is None else np.asarray(labels)
    if classes.size == 0:
        return 0.0
    scores, support = [], []
    for c in classes:
        tp = float(np.sum((pred == c) & (target == c)))
        fp = float(np.sum((pred == c) & (target != c)))
        fn = float(np.sum((pred != c) & (target == c)))
        denom = 2 * tp + fp + fn
        scores.append(2 * tp / denom if denom > 0 else 0.0)
        support.append(float(np.sum(target == c)))
    scores_arr, support_arr = np.asarray(scores), np.asarray(support)
    if average == "macro":
        return float(scores_arr.mean())
    if average == "weighted":
        return float((scores_arr * support_arr).sum() / support_arr.sum()) if support_arr.sum() > 0 else 0.0
    raise ValueError(f"average must be 'weighted' or 'macro', got {average!r}")


class PredictionMetric(Metric):
    """An epoch metric ``fn(predictions, targets) -> float`` over a MONAI evaluator's outputs.

    Reads ``output["pred"]`` (or ``output["pred"][pred_key]`` when the predictor returns a dict, see
    :class:`FusedAndAuxiliaryPredictor`) and ``output["label"]`` of an evaluator run with
    ``decollate=False``; gathers them over ranks before ``fn`` is applied.
    """

    def __init__(self, fn: Callable[[np.ndarray, np.ndarray], float], pred_key: str = "pred", device="cpu") -> None:
        self.fn = fn
        self.pred_key = pred_key
        super().__init__(output_transform=self._select, device=device)

    def _select(self, output: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        pred = output["pred"]
        return (pred[self.pred_key] if isinstance(pred, Mapping) else pred), output["label"]

    def reset(self) -> None:
        self._preds: list[torch.Tensor] = []
        self._targets: list[torch.Tensor] = []

    def update(self, output: tuple[torch.Tensor, torch.Tensor]) -> None:
        pred, target = output
        self._preds.append(pred.detach().float().cpu())
        self._targets.append(target.detach().cpu())

    def compute(self) -> float:
        import ignite.distributed as idist
        from monai.utils import evenly_divisible_all_gather

        if not self._preds:
            return float("nan")
        preds, targets = torch.cat(self._preds), torch.cat(self._targets)
        if idist.get_world_size() > 1:
            # ranks hold unequal shards (each sample is evaluated once, on one rank)
            preds = evenly_divisible_all_gather(preds, concat=True)
            targets = evenly_divisible_all_gather(targets, concat=True)
        return float(self.fn(preds.numpy(), targets.numpy()))


class ClassificationTask:
    """Single-label classification: cross-entropy loss, ε = batch accuracy; metrics for the bundle.

    Args:
        num_classes: number of classes.
        metric_names: the evaluation metrics (``accuracy``, ``f1_weighted``, ``f1_macro``), the first is
            the key metric.
        label_smoothing: cross-entropy label smoothing.
    """

    metric_functions: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
        "accuracy": lambda p, t: accuracy(p.argmax(-1), t.reshape(-1)),
        "f1_weighted": lambda p, t: f1_score(p.argmax(-1), t.reshape(-1), "weighted"),
        "f1_macro": lambda p, t: f1_score(p.argmax(-1), t.reshape(-1), "macro"),
    }
    modality_metric: Callable[[np.ndarray, np.ndarray], float] = staticmethod(
        lambda p, t: accuracy(p.argmax(-1), t.reshape(-1))
    )

    def __init__(
        self,
        num_classes: int,
        metric_names: Sequence[str] = ("accuracy", "f1_weighted", "f1_macro"),
        label_smoothing: float = 0.0,
    ) -> None:
        unknown = [m for m in metric_names if m not in self.metric_functions]
        if unknown:
            raise ValueError(f"unknown metrics {unknown}; available: {sorted(self.metric_functions)}")
        self.num_classes = int(num_classes)
        self.metric_names = tuple(metric_names)
        self.label_smoothing = float(label_smoothing)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), targets.long().reshape(-1), label_smoothing=self.label_smoothing)

    def aux_targets(self, targets: torch.Tensor, aux_logits: torch.Tensor) -> torch.Tensor:
        return targets

    def utilization(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return (logits.argmax(-1) == targets.long().reshape(-1)).float().mean()

    def key_metric(self, prefix: str = "val") -> dict[str, PredictionMetric]:
        """``{"<prefix>/<first metric>": metric}`` for a MONAI evaluator's ``key_val_metric``."""
        name = self.metric_names[0]
        return {f"{prefix}/{name}": PredictionMetric(self.metric_functions[name])}

    def additional_metrics(self, prefix: str = "val", modalities: Sequence[str] = ()) -> dict[str, PredictionMetric]:
        """The other metrics, plus ``<prefix>/modality_accuracy/<m>`` of each auxiliary head."""
        metrics = {f"{prefix}/{n}": PredictionMetric(self.metric_functions[n]) for n in self.metric_names[1:]}
        for m in modalities:
            metrics[f"{prefix}/modality_accuracy/{m}"] = PredictionMetric(self.modality_metric, pred_key=f"pred_{m}")
        return metrics


# ---------------------------------------------------------------------------------------- reporting


class MetricsWithTestJSONWriter(MetricsJSONWriter):
    """:class:`MetricsJSONWriter` that first evaluates the test split and adds ``"test"`` to ``metrics.json``.

    When training completes, the best-validation weights (``test_checkpoint="best"``) are loaded, the
    test evaluator runs, and the final weights are put back, so that whatever saves the network after
    this handler (the training checkpoint) still sees the trained state. The test run happens on every
    rank (its metrics gather over ranks); only the main process writes the file.

    Args:
        output_dir: the run's output folder.
        evaluator: the validation evaluator.
        test_evaluator: the test evaluator (None: no test entry).
        best_weights: ``[(path, module), ...]`` (or a ``{path: module}`` dict): the best-validation
            weights loaded before the test run when ``test_checkpoint="best"`` and every file exists.
        test_checkpoint: ``"best"`` (best validation weights) or ``"last"`` (the final weights).
        extra: more entries for the file; callable values are called when the file is written.
        filename: the file name inside ``output_dir``.
    """

    def __init__(
        self,
        output_dir: str | Path,
        evaluator: Any,
        test_evaluator: Any = None,
        best_weights: Mapping[str, nn.Module] | Sequence[Sequence[Any]] | None = None,
        test_checkpoint: str = "best",
        extra: dict | None = None,
        filename: str = "metrics.json",
    ) -> None:
        super().__init__(output_dir, evaluator, extra=extra, filename=filename)
        if test_checkpoint not in ("best", "last"):
            raise ValueError(f"test_checkpoint must be 'best' or 'last', got {test_checkpoint!r}")
        self.test_evaluator = test_evaluator
        # a list of (path, module) pairs too: bundle configs do not evaluate dict keys
        items = best_weights.items() if isinstance(best_weights, Mapping) else (best_weights or [])
        self.best_weights = [(Path(path), module) for path, module in items]
        self.test_checkpoint = test_checkpoint

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        # registered before the writer, so the test metrics exist when the file is written
        engine.add_event_handler(Events.COMPLETED, self.run_test)
        super().attach(engine)

    def run_test(self, engine: Any) -> None:
        """Evaluates the test split (best or last weights) and keeps its metrics for the file."""
        if self.test_evaluator is None:
            return
        used, saved = "last", None
        if self.test_checkpoint == "best":
            if self.best_weights and all(path.is_file() for path, _ in self.best_weights):
                saved = [{k: v.detach().clone() for k, v in m.state_dict().items()} for _, m in self.best_weights]
                for path, module in self.best_weights:
                    module.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
                used = "best"
            else:
                missing = [str(p) for p, _ in self.best_weights if not p.is_file()] or ["(none configured)"]
                warnings.warn(f"no best-validation weights {missing}; testing the final weights", stacklevel=2)
        try:
            self.test_evaluator.run(global_epoch=engine.state.epoch)
        finally:
            if saved is not None:  # the final weights go back: later handlers save the trained state
                for (_, module), state in zip(self.best_weights, saved):
                    module.load_state_dict(state)
        state = self.test_evaluator.state
        self.extra["test"] = {k: _to_float(v) for k, v in state.metrics.items() if _is_scalar(v)}
        self.extra["test_checkpoint"] = used

    def __call__(self, engine: Any) -> None:
        # entries given as callables (e.g. the data's report: images skipped during training) are read now
        static = self.extra
        self.extra = {k: (v() if callable(v) else v) for k, v in static.items()}
        try:
            super().__call__(engine)
        finally:
            self.extra = static


def require_dataset_dir(dataset_dir: str | Path | None) -> Path:
    """``dataset_dir`` as a path; a clear error when the bundle was run without ``--dataset_dir``."""
    if dataset_dir in (None, "", "None"):
        raise ValueError("give the data set with --dataset_dir PATH (a MOSI/IEMOCAP pickle or a data set folder)")
    path = Path(dataset_dir).expanduser()
    if not path.exists():
        raise AdapterDataError(f"dataset_dir does not exist: {path}")
    return path
