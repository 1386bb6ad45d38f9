"""The columns of a comparison row: validation, lesion-wise, per-modality and Shapley Dice, gaps, robustness,
and the training run's balancer activity (``activity/...``, from ``metrics.json``'s ``"activity"``).

The valuation's columns (Shapley values, robustness, subset Dice) depend on what an absent modality is
(:mod:`brats_cggm.brats.analysis.absence`); a row holding them records the definition as ``row["absent"]``
(:data:`ABSENCE_FIELD`, outside ``validation``, whose entries are all numbers).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from brats_cggm.brats.analysis.absence import LEGACY_ABSENCE
from brats_cggm.brats.data.discovery import DEFAULT_MODALITIES
from brats_cggm.brats.data.labels import REGIONS

__all__ = [
    "ABSENCE_FIELD",
    "ACTIVITY_FIELD",
    "DICE_COLUMNS",
    "GAP_COLUMNS",
    "LESIONWISE_COLUMNS",
    "MODALITY_DICE_COLUMNS",
    "ROBUSTNESS_COLUMNS",
    "SHAPLEY_COLUMNS",
    "activity_columns",
    "activity_key",
    "dice_key",
    "gap_key",
    "is_valuation_key",
    "lesionwise_key",
    "modality_dice_key",
    "row_absence",
    "rows_absence",
    "shapley_key",
    "subset_dice_key",
]

#: The row entry (from ``metrics.json``) holding the run's activity statistics (``docs/methods.md`` §0.3).
ACTIVITY_FIELD = "activity"

#: The row entry naming the definition of an absent modality its valuation columns were measured with.
ABSENCE_FIELD = "absent"


def activity_key(name: str) -> str:
    """A balancer activity statistic (e.g. ``cggm/B/flair/mean``) as a column, as in TensorBoard."""
    return f"activity/{name}"


def activity_columns(row: Mapping[str, Any]) -> dict[str, float]:
    """A row's activity statistics as columns of its ``validation`` (so the tables and the CSV carry them).

    They describe the training run, not its validation: how often and how strongly the balancer (and modality
    dropout) acted (``docs/methods.md`` §0.3).

    Args:
        row: a comparison row (``metrics.json``'s entries; :data:`ACTIVITY_FIELD` absent for joint training,
            or for a run trained before runs recorded it).

    Returns:
        ``{activity_key(name): value}``; empty without activity.
    """
    return {activity_key(name): float(value) for name, value in row.get(ACTIVITY_FIELD, {}).items()}


def dice_key(region: str) -> str:
    """The validation Dice of a region (``tc``, ``wt``, ``et``) or of their ``mean``, as in ``metrics.json``."""
    return f"val/dice/{region}"


def lesionwise_key(region: str) -> str:
    """The BraTS lesion-wise Dice of a region (``tc``, ``wt``, ``et``) or of their ``mean``, as added to a row."""
    return f"lesionwise_dice/{region}"


def modality_dice_key(modality: str) -> str:
    """The validation Dice of a modality's auxiliary head, as in ``metrics.json``."""
    return f"val/modality_dice/{modality}"


def shapley_key(modality: str) -> str:
    """A modality's mean Shapley contribution to the mean Dice, as added to a run's row."""
    return f"shapley/{modality}"


def gap_key(modality: str) -> str:
    """A modality's encoder gap (unimodal probe − multimodal probe mean Dice), as added to a run's row."""
    return f"gap/{modality}"


def subset_dice_key(subset: str) -> str:
    """The mean Dice with only a subset of the modalities (``"flair+t1ce"``, the others absent), as added to a
    row."""
    return f"subset_dice/{subset}"


DICE_COLUMNS = [dice_key(region) for region in (*REGIONS, "mean")]
LESIONWISE_COLUMNS = [lesionwise_key(region) for region in (*REGIONS, "mean")]
GAP_COLUMNS = [gap_key(m) for m in DEFAULT_MODALITIES]
#: Missing-modality robustness: the mean Dice over the 15 non-empty subsets, and the worst subset's.
ROBUSTNESS_COLUMNS = ["robustness/mean_subsets", "robustness/worst_subset"]
MODALITY_DICE_COLUMNS = [modality_dice_key(m) for m in DEFAULT_MODALITIES]
SHAPLEY_COLUMNS = [shapley_key(m) for m in DEFAULT_MODALITIES]


def is_valuation_key(key: str) -> bool:
    """Whether a row's column comes from the subset valuation (so depends on what an absent modality is).

    Args:
        key: a column of a row's ``validation``.

    Returns:
        True for the Shapley, subset Dice and robustness columns.
    """
    return key.startswith((shapley_key(""), subset_dice_key(""))) or key in ROBUSTNESS_COLUMNS


def row_absence(row: Mapping[str, Any]) -> str | None:
    """The definition of an absent modality a row's valuation columns were measured with.

    Args:
        row: a comparison row (``validation`` and, when valuated, :data:`ABSENCE_FIELD`).

    Returns:
        The definition; :data:`~brats_cggm.brats.analysis.absence.LEGACY_ABSENCE` for a row valuated before
        rows recorded it; None for a row without valuation columns.
    """
    if not any(is_valuation_key(key) for key in row.get("validation", {})):
        return None
    return str(row.get(ABSENCE_FIELD, LEGACY_ABSENCE))


def rows_absence(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The definitions of an absent modality the valuated rows were measured with, sorted (one, unless mixed).

    Args:
        rows: comparison rows.

    Returns:
        The distinct definitions (empty when no row is valuated).
    """
    return sorted({absent for absent in map(row_absence, rows) if absent is not None})
