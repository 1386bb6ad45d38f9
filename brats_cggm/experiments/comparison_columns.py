"""The columns of a comparison row: validation, lesion-wise, per-modality and Shapley Dice, gaps, robustness."""

from __future__ import annotations

from brats_cggm.brats.data.discovery import DEFAULT_MODALITIES
from brats_cggm.brats.data.labels import REGIONS

__all__ = [
    "DICE_COLUMNS",
    "GAP_COLUMNS",
    "LESIONWISE_COLUMNS",
    "MODALITY_DICE_COLUMNS",
    "ROBUSTNESS_COLUMNS",
    "SHAPLEY_COLUMNS",
    "dice_key",
    "gap_key",
    "lesionwise_key",
    "modality_dice_key",
    "shapley_key",
    "subset_dice_key",
]


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
    """The mean Dice with only a subset of the modalities (``"flair+t1ce"``, others' inputs zeroed), as added to a
    row."""
    return f"subset_dice/{subset}"


DICE_COLUMNS = [dice_key(region) for region in (*REGIONS, "mean")]
LESIONWISE_COLUMNS = [lesionwise_key(region) for region in (*REGIONS, "mean")]
GAP_COLUMNS = [gap_key(m) for m in DEFAULT_MODALITIES]
#: Missing-modality robustness: the mean Dice over the 15 non-empty subsets, and the worst subset's.
ROBUSTNESS_COLUMNS = ["robustness/mean_subsets", "robustness/worst_subset"]
MODALITY_DICE_COLUMNS = [modality_dice_key(m) for m in DEFAULT_MODALITIES]
SHAPLEY_COLUMNS = [shapley_key(m) for m in DEFAULT_MODALITIES]
