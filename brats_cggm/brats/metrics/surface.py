"""Global per-region metrics as the official BraTS evaluator computes them: Dice, HD95 and NSD.

The official evaluator (``brats-evaluation`` on PyPI, built on ``panoptica``) takes every surface metric from the
same two arrays of surface distances (``panoptica/metrics/_surface_distances.py``, ``_surface_distance_pair``):

- the surface of a mask is the mask minus its erosion by the 6-connected cross (``scipy.ndimage.binary_erosion``,
  voxels on the volume's edge count as surface);
- for each surface voxel of one mask, the Euclidean distance (mm, with the voxel spacing) to the nearest surface
  voxel of the other mask.

From these (``_hd95_from_pair``, ``_nsd_from_pair``):

- HD95 (``hd95="pooled"``, the official definition) is the 95th percentile (``numpy.percentile``, linear
  interpolation) of both directions' distances pooled into one array;
- HD95 (``hd95="directed"``) is the larger of the two directed 95th percentiles, the definition of
  ``monai.metrics.compute_hausdorff_distance`` (and of :func:`brats_cggm.brats.metrics.case_scores.hd95`);
- NSD at tolerance ``tau`` is the mean of the two fractions of surface voxels within ``tau`` of the other surface.
  This is panoptica's variant (taken from GaNDLF and nnU-Net): it weighs both surfaces equally and counts voxels,
  not surface areas, so it differs from the surface Dice of Nikolov et al. (2021).

The official evaluator computes these global metrics without the voxel spacing, in voxels (its lesion metrics do
use the spacing); the two agree on 1 mm isotropic BraTS data. Here the spacing is used; pass ``(1, 1, 1)`` to
reproduce the official numbers on other grids.

Edge cases (``panoptica_result.py``, ``PanopticaResult.__init__`` with the ``gli`` configuration's edge-case
handler): when prediction and reference do not overlap at all, the official evaluator does not compute the metrics
but reports Dice 0, NSD 0 and HD95 infinite, which its CSV writer (``brats_evaluation/metrics_parser.py``) turns
into 373 mm. That holds for one empty mask and also for two disjoint non-empty masks. When both are empty the
official evaluator reports NaN; here the BraTS convention of the earlier challenge evaluators is kept instead:
Dice 1, HD95 0, NSD 1.

The surfaces are extracted on the union bounding box of the two masks only: a mask voxel on the box's face is a
surface voxel both in the box and in the whole volume (its neighbour outside the box is outside both masks), so the
surfaces are the same as on the whole volume. The nearest-surface distances come from a k-d tree of the surface
voxels' positions in mm, which gives the exact Euclidean distances that panoptica's distance transform gives.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

__all__ = [
    "OFFICIAL_GLOBAL_NSD_TOLERANCE",
    "OFFICIAL_HD95_MAX_MM",
    "GlobalMetrics",
    "global_metrics",
    "hd95_from_distances",
    "normalized_surface_dice_from_distances",
    "surface_distances",
    "union_bounding_box",
]

#: HD95 the official evaluator's CSV writer reports when the masks do not overlap ("diameter of the cube in SRI
#: space", ``brats_evaluation/metrics_parser.py``); :data:`brats_cggm.brats.metrics.case_scores.HD95_EMPTY_MM` is the
#: exact diagonal of the 240 x 240 x 155 mm volume, 373.13 mm.
OFFICIAL_HD95_MAX_MM = 373.0

#: NSD tolerance of the official evaluator's global metrics: it calls panoptica's NSD without a voxel spacing, which
#: then measures in voxels and falls back to a tolerance of 0.5 (``_nsd_from_pair``). On 1 mm isotropic BraTS data
#: only coinciding surface voxels count.
OFFICIAL_GLOBAL_NSD_TOLERANCE = 0.5

_SURFACE_STRUCTURE = ndimage.generate_binary_structure(3, 1)

GlobalMetrics = dict[str, float]


def _check_pair(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray, tuple]:
    pred, ref = np.asarray(pred, bool), np.asarray(ref, bool)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != pred.ndim or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing must be {pred.ndim} positive finite numbers, got {spacing}")
    return pred, ref, spacing


def union_bounding_box(*masks: np.ndarray) -> tuple[slice, ...] | None:
    """The smallest box holding every true voxel of the masks.

    Args:
        masks: boolean masks of one shape.

    Returns:
        One slice per axis, or None if every mask is empty.
    """
    union = np.logical_or.reduce([np.asarray(m, bool) for m in masks])
    box = []
    for axis in range(union.ndim):
        # a projection per axis costs one pass over the volume, unlike labelling it
        hits = np.flatnonzero(union.any(axis=tuple(a for a in range(union.ndim) if a != axis)))
        if hits.size == 0:
            return None
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


def _surface(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, structure=_SURFACE_STRUCTURE)


def surface_distances(
    pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0)
) -> tuple[np.ndarray, np.ndarray]:
    """Distances between the surfaces of two non-empty masks, both directions.

    Args:
        pred: predicted boolean mask.
        ref: reference boolean mask of the same shape.
        spacing: voxel size along each axis, mm.

    Returns:
        ``(ref_to_pred, pred_to_ref)``: for each surface voxel of ``ref``, the distance (mm) to the nearest surface
        voxel of ``pred``; and the converse.

    Raises:
        ValueError: if the shapes differ, the spacing is not positive, or a mask is empty.
    """
    pred, ref, spacing = _check_pair(pred, ref, spacing)
    if not pred.any() or not ref.any():
        raise ValueError("surface distances need two non-empty masks")
    box = union_bounding_box(pred, ref)
    scale = np.asarray(spacing)
    pred_points = np.argwhere(_surface(pred[box])) * scale
    ref_points = np.argwhere(_surface(ref[box])) * scale
    # Nearest surface voxel by a k-d tree on the surface voxels' positions (mm): the exact Euclidean distance, as
    # the distance transform gives, at a cost set by the surfaces' sizes rather than the box's volume.
    ref_to_pred = cKDTree(pred_points).query(ref_points)[0]
    pred_to_ref = cKDTree(ref_points).query(pred_points)[0]
    return ref_to_pred, pred_to_ref


def hd95_from_distances(ref_to_pred: np.ndarray, pred_to_ref: np.ndarray, mode: str = "pooled") -> float:
    """95th-percentile Hausdorff distance from the two arrays of :func:`surface_distances`.

    Args:
        ref_to_pred: distances of the reference surface to the predicted one.
        pred_to_ref: distances of the predicted surface to the reference one.
        mode: ``"pooled"``, the 95th percentile of both arrays together (the official BraTS evaluator,
            ``panoptica``'s ``_hd95_from_pair``); ``"directed"``, the larger of the two 95th percentiles
            (``monai.metrics.compute_hausdorff_distance``).

    Returns:
        HD95, in the unit of the distances.

    Raises:
        ValueError: if ``mode`` is unknown.
    """
    if mode == "pooled":
        return float(np.percentile(np.concatenate([ref_to_pred, pred_to_ref]), 95))
    if mode == "directed":
        return float(max(np.percentile(ref_to_pred, 95), np.percentile(pred_to_ref, 95)))
    raise ValueError(f"hd95 must be 'pooled' or 'directed', got {mode!r}")


def normalized_surface_dice_from_distances(
    ref_to_pred: np.ndarray, pred_to_ref: np.ndarray, tolerance_mm: float
) -> float:
    """Normalised surface Dice (panoptica's variant) from the two arrays of :func:`surface_distances`.

    ``NSD = (|{d in ref_to_pred : d <= tau}| / |ref_to_pred| + |{d in pred_to_ref : d <= tau}| / |pred_to_ref|) / 2``
    (``panoptica/metrics/_surface_distances.py``, ``_nsd_from_pair``).

    Args:
        ref_to_pred: distances of the reference surface to the predicted one.
        pred_to_ref: distances of the predicted surface to the reference one.
        tolerance_mm: the tolerance ``tau``.

    Returns:
        NSD in ``[0, 1]``.
    """
    return 0.5 * (float(np.mean(ref_to_pred <= tolerance_mm)) + float(np.mean(pred_to_ref <= tolerance_mm)))


def global_metrics(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    nsd_tolerance_mm: float | None = OFFICIAL_GLOBAL_NSD_TOLERANCE,
    hd95: str = "pooled",
    hd95_max_mm: float = OFFICIAL_HD95_MAX_MM,
) -> GlobalMetrics:
    """Dice, HD95 and NSD of one region, with the official evaluator's edge cases (see the module docstring).

    Args:
        pred: predicted boolean mask of the region.
        ref: reference boolean mask, same shape.
        spacing: voxel size along each axis, mm.
        nsd_tolerance_mm: NSD tolerance; the default is the official global one (see
            :data:`OFFICIAL_GLOBAL_NSD_TOLERANCE`); None takes the smallest voxel size, panoptica's tolerance for
            its lesion metrics (1 mm for BraTS data).
        hd95: ``"pooled"`` (official) or ``"directed"`` (MONAI's), see :func:`hd95_from_distances`.
        hd95_max_mm: HD95 when the masks do not overlap.

    Returns:
        ``{"dsc": ..., "hd95": ..., "nsd": ...}``.

    Raises:
        ValueError: if the shapes differ, the spacing is not positive or ``hd95`` is unknown.
    """
    pred, ref, spacing = _check_pair(pred, ref, spacing)
    if hd95 not in ("pooled", "directed"):
        raise ValueError(f"hd95 must be 'pooled' or 'directed', got {hd95!r}")
    tolerance = min(spacing) if nsd_tolerance_mm is None else float(nsd_tolerance_mm)
    n_pred, n_ref = int(pred.sum()), int(ref.sum())
    if n_pred == 0 and n_ref == 0:
        return {"dsc": 1.0, "hd95": 0.0, "nsd": 1.0}
    overlap = int(np.count_nonzero(pred & ref))
    if overlap == 0:
        return {"dsc": 0.0, "hd95": float(hd95_max_mm), "nsd": 0.0}
    ref_to_pred, pred_to_ref = surface_distances(pred, ref, spacing)
    return {
        "dsc": 2.0 * overlap / (n_pred + n_ref),
        "hd95": hd95_from_distances(ref_to_pred, pred_to_ref, hd95),
        "nsd": normalized_surface_dice_from_distances(ref_to_pred, pred_to_ref, tolerance),
    }
