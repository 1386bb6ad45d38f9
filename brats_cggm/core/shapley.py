"""Modality valuation by Shapley values (Wei et al., CVPR 2024, arXiv 2309.06255), task-agnostic.

The contribution of modality i is its Shapley value for a value function v over subsets S of the
modalities (v(S) = the model's score with only the modalities in S present; what "absent" means is the caller's:
left out by an availability mask (:mod:`brats_cggm.core.availability`) or zeroed (:func:`mask_modalities`)):

    φ_i = Σ_{S ⊆ N∖{i}} |S|! (M − |S| − 1)! / M! · (v(S ∪ {i}) − v(S)).

:func:`shapley_values` is exact: it evaluates all 2^M subsets once (16 for the four BraTS
modalities). Values may be numbers, numpy arrays or tensors (e.g. one Dice per region); the
contributions then have the same shape, and by efficiency Σ_i φ_i = v(N) − v(∅).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import torch

__all__ = ["all_subsets", "mask_modalities", "shapley_from_values", "shapley_values", "subset_key"]


def all_subsets(modalities: Sequence[Hashable]) -> list[tuple]:
    """Every subset of ``modalities`` as a tuple in the given order, smallest first (2^M of them)."""
    modalities = tuple(modalities)
    return [s for r in range(len(modalities) + 1) for s in itertools.combinations(modalities, r)]


def subset_key(subset: Sequence[Hashable]) -> str:
    """A readable name of a subset (``"flair+t1"``; ``"none"`` for the empty set)."""
    return "+".join(str(m) for m in subset) or "none"


def shapley_from_values(values: dict[frozenset, Any], modalities: Sequence[Hashable]) -> dict[Hashable, Any]:
    """Shapley values from a table of subset values.

    Args:
        values: ``frozenset(subset) → v(subset)`` for every subset of ``modalities``.
        modalities: the players.

    Returns:
        ``modality → φ``.
    """
    modalities = tuple(modalities)
    num = len(modalities)
    out: dict[Hashable, Any] = {}
    for m in modalities:
        others = [o for o in modalities if o != m]
        total: Any = 0.0
        for r in range(num):
            weight = math.factorial(r) * math.factorial(num - r - 1) / math.factorial(num)
            for s in itertools.combinations(others, r):
                base = frozenset(s)
                total = total + weight * (values[base | {m}] - values[base])
        out[m] = total
    return out


def shapley_values(
    value_fn: Callable[[tuple], Any], modalities: Sequence[Hashable]
) -> tuple[dict[Hashable, Any], dict[frozenset, Any]]:
    """Exact Shapley values of ``modalities`` under ``value_fn``.

    Args:
        value_fn: called once per subset (a tuple of modalities in the given order, possibly empty).
        modalities: the players (e.g. modality names or channel indices).

    Returns:
        ``(φ by modality, v by frozenset(subset))``.
    """
    modalities = tuple(modalities)
    if len(set(modalities)) != len(modalities):
        raise ValueError(f"modalities repeat: {modalities}")
    values = {frozenset(s): value_fn(s) for s in all_subsets(modalities)}
    return shapley_from_values(values, modalities), values


def mask_modalities(inputs: torch.Tensor, keep: Sequence[int], dim: int = 1) -> torch.Tensor:
    """``inputs`` with every modality channel not in ``keep`` zeroed (a new tensor)."""
    mask = torch.zeros(inputs.shape[dim], dtype=inputs.dtype, device=inputs.device)
    if len(keep):
        mask[list(keep)] = 1
    shape = [1] * inputs.ndim
    shape[dim] = -1
    return inputs * mask.view(shape)
