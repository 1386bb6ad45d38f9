"""Which modalities a sample has: the one definition of an absent modality, from training to inference.

An availability mask is a boolean tensor of shape ``(B, M)``: entry ``[n, i]`` is True when sample ``n``
has modality ``i``. A network given a mask (``forward_features(x, available=mask)``) does not run an
absent modality's encoder, leaves its features out of fusion and its auxiliary head gives no prediction
and no loss. Every sample has at least one modality.

Fusion of the present modalities is **masked concatenation with rescaling** (RFNet, mmFormer): the
absent modalities' features are zeros in the concatenation and the present ones are multiplied by
``M / |S|`` (:func:`fusion_weights`), so the fusion's input keeps its expected scale whatever the subset.
With every modality present the weights are all 1 and the fusion is the plain concatenation.

Training-time modality dropout (:func:`draw_availability`), OPM's drop, the Shapley valuation, the
subset robustness and ``brats-cggm-infer --missing-modality drop`` all go through this definition.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar, cast

import torch

__all__ = [
    "availability_of",
    "check_availability",
    "draw_availability",
    "fused_modalities",
    "fusion_weights",
    "select_rows",
]

SelectedT = TypeVar("SelectedT")


def check_availability(
    available: torch.Tensor, batch_size: int, num_modalities: int, allow_empty: bool = False
) -> torch.Tensor:
    """Validate an availability mask and return it as a boolean tensor.

    Args:
        available: ``(B, M)`` mask (bool, or 0/1 numbers).
        batch_size: B.
        num_modalities: M.
        allow_empty: accept a sample without any modality (a balancer's fusion mask, which the network
            falls back from).

    Returns:
        The mask as ``torch.bool``.

    Raises:
        ValueError: the shape is not ``(batch_size, num_modalities)``, or a sample has no modality and
            ``allow_empty`` is False.
    """
    if tuple(available.shape) != (batch_size, num_modalities):
        raise ValueError(
            f"availability mask of shape {tuple(available.shape)}, expected (batch, modalities) = "
            f"({batch_size}, {num_modalities})"
        )
    mask = available.bool()
    empty = [] if allow_empty else (~mask.any(1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"samples {empty} of the batch have no modality: a sample needs at least one")
    return mask


def availability_of(
    subset: Sequence[int], batch_size: int, num_modalities: int, device: torch.device | str | None = None
) -> torch.Tensor:
    """The mask of a batch whose every sample has exactly the modalities ``subset``.

    Args:
        subset: modality indices present.
        batch_size: B.
        num_modalities: M.
        device: the mask's device.

    Returns:
        ``(B, M)`` boolean mask.

    Raises:
        ValueError: ``subset`` is empty or names an index outside ``[0, M)``.
    """
    if not subset:
        raise ValueError("a subset of the modalities must not be empty")
    if any(not 0 <= i < num_modalities for i in subset):
        raise ValueError(f"subset {tuple(subset)} names a modality outside 0..{num_modalities - 1}")
    row = torch.zeros(num_modalities, dtype=torch.bool, device=device)
    row[list(subset)] = True
    return row.expand(batch_size, num_modalities).clone()


def draw_availability(
    batch_size: int,
    probabilities: torch.Tensor,
    keep_one: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw a mask where modality ``i`` of every sample is absent with probability ``probabilities[i]``.

    Args:
        batch_size: B.
        probabilities: ``(M,)`` absence probability per modality.
        keep_one: where a sample would lose every modality, keep one chosen uniformly (the only mode that
            gives a valid mask when a probability can reach 1).
        generator: random generator (the global one when None).

    Returns:
        ``(B, M)`` boolean mask (on the CPU).
    """
    num = probabilities.numel()
    available = torch.rand(batch_size, num, generator=generator) >= probabilities.float().view(1, num)
    if keep_one:
        empty = ~available.any(1)
        if empty.any():
            pick = torch.randint(num, (int(empty.sum()),), generator=generator)
            available[empty.nonzero().flatten(), pick] = True
    return available


def fused_modalities(
    available: torch.Tensor | None, fusion_mask: torch.Tensor | None, batch_size: int, num_modalities: int
) -> torch.Tensor | None:
    """The modalities each sample fuses: the available ones that a balancer's fusion mask keeps.

    A sample the fusion mask would leave without a modality fuses all its available ones.

    Args:
        available: ``(B, M)`` availability mask, already checked (None: every modality).
        fusion_mask: ``(B, M)`` booleans of a balancer's drop (None: no drop).
        batch_size: B.
        num_modalities: M.

    Returns:
        ``(B, M)`` boolean mask, on ``available``'s (else ``fusion_mask``'s) device; None when both are None.
    """
    if fusion_mask is None:
        return available
    mask = check_availability(fusion_mask, batch_size, num_modalities, allow_empty=True)
    base = available if available is not None else torch.ones_like(mask)
    mask = mask.to(base.device) & base
    return torch.where(mask.any(1, keepdim=True), mask, base)


def fusion_weights(available: torch.Tensor) -> torch.Tensor:
    """Per-sample weights of each modality's features in the fusion: ``M / |S|`` if present, else 0.

    Args:
        available: ``(B, M)`` boolean mask.

    Returns:
        ``(B, M)`` float weights; all ones when every modality is present.
    """
    present = available.float()
    return present * (available.shape[1] / present.sum(1, keepdim=True).clamp_min(1.0))


def select_rows(features: SelectedT, rows: torch.Tensor) -> SelectedT:
    """The samples ``rows`` of one modality's features or inputs (tensors batch first, nested in lists or dicts).

    Args:
        features: a tensor ``(B, ...)``, or a list, tuple or dict of such tensors.
        rows: ``(B,)`` boolean mask of the samples to keep.

    Returns:
        The same structure holding only those samples.
    """
    selected: Any
    if isinstance(features, torch.Tensor):
        selected = features[rows.to(features.device)]
    elif isinstance(features, list | tuple):
        selected = type(features)(select_rows(f, rows) for f in features)
    elif isinstance(features, Mapping):
        selected = {key: select_rows(value, rows) for key, value in features.items()}
    else:
        raise TypeError(f"features must be tensors in lists or dicts, got {type(features).__name__}")
    return cast(SelectedT, selected)
