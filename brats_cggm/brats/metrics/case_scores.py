"""The metrics of one case's label maps: the BraTS challenge row, or the legacy Dice and HD95 (no files read).

See :mod:`brats_cggm.brats.metrics.evaluation` for the columns, the edge cases and the non-finite values.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from brats_cggm.brats.data.labels import REGIONS, labels_to_regions
from brats_cggm.brats.metrics.lesion import case_challenge_metrics, official_row, penalised_lesionwise_scores
from brats_cggm.brats.metrics.surface import OFFICIAL_HD95_MAX_MM

__all__ = [
    "EVAL_REGIONS",
    "HD95_EMPTY_MM",
    "METRIC_NAMES",
    "ChallengeOptions",
    "case_metrics",
    "challenge_columns",
    "challenge_row",
    "detect_label_convention",
    "dice",
    "hd95",
]


#: HD95 when exactly one of prediction and reference is empty (legacy metrics; the challenge metrics use 373).
HD95_EMPTY_MM = 373.13


#: Regions of the legacy metrics, in the order of the BraTS challenge tables.
EVAL_REGIONS: tuple[str, ...] = ("et", "tc", "wt")


#: Per-case columns of the legacy metrics.
METRIC_NAMES: tuple[str, ...] = tuple(f"{m}_{r}" for m in ("dice", "hd95") for r in EVAL_REGIONS)


#: Per-region column stems of the challenge metrics, in the order of the official CSV, then the added ones.
_CHALLENGE_STEMS: tuple[str, ...] = (
    *(f"all_instance_{m}" for m in ("tp", "fp", "fn", "prec", "rec", "f1")),
    *(f"global_{m}" for m in ("dsc", "nsd", "hd95")),
    *(f"lesionwise_{m}_{s}" for m in ("dsc", "nsd", "hd95") for s in ("mean", "std")),
    "pq_dsc",
    *(f"lesionwise_penalised_{m}" for m in ("dsc", "nsd", "hd95")),
)


@dataclass(frozen=True)
class ChallengeOptions:
    """Settings of the challenge metrics.

    Attributes:
        hd95: ``"pooled"``, the official definition (95th percentile of both directions' surface distances
            together), or ``"directed"``, the larger of the two directed 95th percentiles (MONAI's
            ``compute_hausdorff_distance``, used by most MONAI-based papers).
        min_lesion_volume_mm3: reference lesions smaller than this are left out of the penalised lesion-wise
            scores (the official BraTS-METS parser uses 20); 0 counts every lesion.
        hd95_max_mm: HD95 of a region without overlap and of an unmatched lesion; also how an infinite HD95 is
            written.
    """

    hd95: str = "pooled"
    min_lesion_volume_mm3: float = 0.0
    hd95_max_mm: float = OFFICIAL_HD95_MAX_MM

    def __post_init__(self) -> None:
        if self.hd95 not in ("pooled", "directed"):
            raise ValueError(f"hd95 must be 'pooled' or 'directed', got {self.hd95!r}")
        if not (math.isfinite(self.min_lesion_volume_mm3) and self.min_lesion_volume_mm3 >= 0):
            raise ValueError(f"min_lesion_volume_mm3 must be a finite number >= 0, got {self.min_lesion_volume_mm3}")


def challenge_columns(regions: Sequence[str]) -> list[str]:
    """The per-case columns of the challenge metrics of ``regions``, region by region.

    Args:
        regions: region names (see :data:`~brats_cggm.brats.metrics.challenge_regions.CHALLENGE_REGIONS`).

    Returns:
        ``<stem>_<region>`` for every stem (see the module docstring).
    """
    return [f"{stem}_{region}" for region in regions for stem in _CHALLENGE_STEMS]


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice of two boolean masks; 1 when both are empty.

    Args:
        pred: predicted mask.
        ref: reference mask of the same shape.

    Returns:
        ``2 |pred & ref| / (|pred| + |ref|)``.
    """
    pred, ref = np.asarray(pred, bool), np.asarray(ref, bool)
    total = int(pred.sum()) + int(ref.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(pred, ref).sum()) / total


def hd95(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> float:
    """95th-percentile Hausdorff distance (mm) of two boolean masks, with the BraTS empty-mask conventions.

    Args:
        pred: predicted mask.
        ref: reference mask of the same shape.
        spacing: voxel size along each axis, mm.

    Returns:
        0 if both are empty, :data:`HD95_EMPTY_MM` if one is, else the symmetric HD95.
    """
    from monai.metrics import compute_hausdorff_distance

    pred, ref = np.asarray(pred, bool), np.asarray(ref, bool)
    p_any, r_any = bool(pred.any()), bool(ref.any())
    if not p_any and not r_any:
        return 0.0
    if p_any != r_any:
        return HD95_EMPTY_MM
    with warnings.catch_warnings():
        # MONAI's own internal call to a deprecated argument; nothing for the user to act on.
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*")
        value = compute_hausdorff_distance(
            torch.from_numpy(pred)[None, None],
            torch.from_numpy(ref)[None, None],
            include_background=True,
            percentile=95,
            spacing=[float(s) for s in spacing],
        )
    return float(value.reshape(-1)[0])


def case_metrics(
    pred_labels: np.ndarray,
    ref_labels: np.ndarray,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    convention: str = "brats2021",
    ref_convention: str | None = None,
) -> dict[str, float]:
    """Dice and HD95 of ET, TC and WT for one case.

    Args:
        pred_labels: predicted label map ``(X, Y, Z)``.
        ref_labels: reference label map, same shape.
        spacing: voxel size (mm).
        convention: label convention of the prediction.
        ref_convention: label convention of the reference (``convention`` when None).

    Returns:
        ``{"dice_et": ..., "dice_tc": ..., "dice_wt": ..., "hd95_et": ..., ...}``.
    """
    pred = np.asarray(labels_to_regions(np.asarray(pred_labels), convention)) > 0.5
    ref = np.asarray(labels_to_regions(np.asarray(ref_labels), ref_convention or convention)) > 0.5
    out = {}
    for region in EVAL_REGIONS:
        i = REGIONS.index(region)
        out[f"dice_{region}"] = dice(pred[i], ref[i])
        out[f"hd95_{region}"] = hd95(pred[i], ref[i], spacing)
    return out


def detect_label_convention(values: Sequence[float]) -> str | None:
    """The label convention a label map's values show, where they show one.

    ``3`` occurs only in the 2023 convention (enhancing tumour; ``4`` is then the resection cavity), ``4`` without
    ``3`` only in the 2021 one. Values up to 2 fit both, which define every region alike except the resection
    cavity. MSD labels (``3`` enhancing, ``1`` and ``2`` swapped) cannot be told from 2023 labels: give them
    explicitly.

    Args:
        values: the distinct values of a label map.

    Returns:
        ``"brats2023"``, ``"brats2021"``, or None when the values fit both.
    """
    present = {float(v) for v in values}
    if 3.0 in present:
        return "brats2023"
    if 4.0 in present:
        return "brats2021"
    return None


def challenge_row(
    pred_labels: np.ndarray,
    ref_labels: np.ndarray,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    convention: str = "brats2021",
    ref_convention: str | None = None,
    options: ChallengeOptions | None = None,
) -> dict[str, float]:
    """The challenge metrics of one case, in the columns of :func:`challenge_columns`.

    The regions are those defined in both label conventions (``rc`` only when both are ``brats2023``).

    Args:
        pred_labels: predicted label map ``(X, Y, Z)``.
        ref_labels: reference label map, same shape.
        spacing: voxel size (mm).
        convention: label convention of the prediction.
        ref_convention: label convention of the reference (``convention`` when None).
        options: the metric settings (defaults: official).

    Returns:
        Column name to value; an infinite HD95 is ``options.hd95_max_mm``, NaN stays NaN.

    Raises:
        ValueError: if the shapes differ or a convention is unknown.
    """
    options = options or ChallengeOptions()
    result = case_challenge_metrics(
        pred_labels,
        ref_labels,
        spacing,
        convention,
        ref_convention,
        hd95=options.hd95,
        hd95_max_mm=options.hd95_max_mm,
    )
    row = official_row(result)
    for region, r in result.items():
        row[f"pq_dsc_{region}"] = r["pq_dsc"]
        penalised = penalised_lesionwise_scores(r, options.min_lesion_volume_mm3, options.hd95_max_mm)
        for metric in ("dsc", "nsd", "hd95"):
            row[f"lesionwise_penalised_{metric}_{region}"] = penalised[metric]
    # Infinity only arises as the HD95 of a region with lesions on both sides but no match: the official CSV's 373.
    return {k: options.hd95_max_mm if math.isinf(v) else float(v) for k, v in row.items()}
