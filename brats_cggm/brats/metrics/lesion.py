"""Lesion-wise metrics of the official BraTS evaluator (``brats-evaluation``, built on ``panoptica``).

Definitions, with the reference implementation's file and function (``panoptica`` 2.1.7, ``brats-evaluation``
0.0.10, its ``gli`` configuration ``configs/config_gli.yaml``):

- lesions are the connected components of a region's mask, 26-connected in 3-D
  (``ConnectedComponentsInstanceApproximator``: ``cc3d.connected_components`` with its default connectivity);
- reference and predicted lesions are matched one to one by maximum bipartite matching on Dice
  (``MaxBipartiteMatching`` in ``instance_matcher.py``): the cost of a pair is ``1 - Dice`` when its Dice is at
  least ``1e-6`` (any overlap), ``1 + 1e-6`` otherwise; ``scipy.optimize.linear_sum_assignment`` minimises the total
  cost and the pairs of cost below 1 are the matches;
- ``tp`` matches, ``fp = n_pred - tp``, ``fn = n_ref - tp``, ``prec = tp / (tp + fp)``, ``rec = tp / (tp + fn)``,
  ``rq = tp / (tp + fp/2 + fn/2)`` (``panoptica_result.py``: ``prec``, ``rec``, ``rq``; ``rq`` is the F1 score);
- for each matched pair, its Dice, HD95 (pooled, mm) and NSD (tolerance: the smallest voxel size), see
  :mod:`brats_cggm.brats.metrics.surface`; ``sq_<metric>`` is their mean, ``sq_<metric>_std`` their population
  standard deviation, ``pq_dsc = sq_dsc * rq``;
- no match (edge cases of the ``gli`` configuration): ``sq_dsc = sq_nsd = pq_dsc = rq = 0`` and ``sq_hd95``
  infinite, which the official CSV keeps as ``inf``; no lesion on either side: every lesion metric NaN; a 0/0
  precision or recall is NaN (the official CSV leaves it empty).

On an anisotropic grid the official evaluator applies the voxel spacing to the wrong axes: it reads NIfTI files
with SimpleITK, whose array is ``(z, y, x)``, and passes the ``(x, y, z)`` spacing unchanged. Here the spacing is
applied in the array's own order; the two agree on isotropic data (all BraTS releases).

The official CSV (``brats_evaluation/metrics_parser.py``, ``parse_seg_results``) names these columns
``all_instance_{tp,fp,fn,prec,rec,f1}_<region>``, ``lesionwise_{dsc,nsd,hd95}_{mean,std}_<region>`` and
``global_{dsc,nsd,hd95}_<region>``; :func:`official_row` writes a case in these names.

Lesion-wise scores that count every unmatched lesion (``parse_mets_results``, the official rule of the BraTS-METS
task): each reference lesion of volume at least a threshold (mm³) contributes its matched Dice, HD95 and NSD, or
0, :data:`~brats_cggm.brats.metrics.surface.OFFICIAL_HD95_MAX_MM` and 0 when unmatched; each unmatched predicted
lesion contributes 0, 373 and 0; the case's score is the mean (NaN without a reference lesion above the
threshold). This is :func:`penalised_lesionwise_scores`. The BraTS 2023 scripts (``BraTS-2023-Metrics``), which
dilate the reference lesions before matching them to predicted components, are a different rule and are not
implemented here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from brats_cggm.brats.data.labels import LabelConvention
from brats_cggm.brats.metrics.challenge_regions import CHALLENGE_REGIONS, challenge_region_masks
from brats_cggm.brats.metrics.surface import (
    OFFICIAL_GLOBAL_NSD_TOLERANCE,
    OFFICIAL_HD95_MAX_MM,
    global_metrics,
    hd95_from_distances,
    normalized_surface_dice_from_distances,
    surface_distances,
    union_bounding_box,
)

__all__ = [
    "MATCHING_DICE_THRESHOLD",
    "case_challenge_metrics",
    "connected_lesions",
    "match_lesions",
    "official_row",
    "penalised_lesionwise_scores",
    "region_lesion_metrics",
]

#: Smallest Dice of a pair of lesions that may be matched (the ``gli`` configuration's ``matching_threshold``).
MATCHING_DICE_THRESHOLD = 1e-6

_CONNECTIVITY_26 = np.ones((3, 3, 3), dtype=bool)


def connected_lesions(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Lesions of a region: its 26-connected components.

    Args:
        mask: boolean mask ``(X, Y, Z)``.

    Returns:
        ``(lesions, n)``: an ``int32`` map with the lesions numbered ``1..n`` (0 outside), and ``n``.
    """
    lesions, n = ndimage.label(np.asarray(mask, bool), structure=_CONNECTIVITY_26)
    return lesions.astype(np.int32, copy=False), int(n)


def _pair_dice(ref_lesions: np.ndarray, n_ref: int, pred_lesions: np.ndarray, n_pred: int) -> np.ndarray:
    # Dice of every (reference, predicted) lesion pair from one pass over the tumour voxels.
    ref_volume = np.bincount(ref_lesions[ref_lesions > 0], minlength=n_ref + 1)
    pred_volume = np.bincount(pred_lesions[pred_lesions > 0], minlength=n_pred + 1)
    both = (ref_lesions > 0) & (pred_lesions > 0)
    pair_index = ref_lesions[both].astype(np.int64) * (n_pred + 1) + pred_lesions[both]
    overlap = np.bincount(pair_index, minlength=(n_ref + 1) * (n_pred + 1)).reshape(n_ref + 1, n_pred + 1)
    total = ref_volume[:, None] + pred_volume[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        dice = np.where(total > 0, 2.0 * overlap / total, 0.0)
    return dice[1:, 1:]


def match_lesions(
    ref_lesions: np.ndarray,
    n_ref: int,
    pred_lesions: np.ndarray,
    n_pred: int,
    threshold: float = MATCHING_DICE_THRESHOLD,
) -> list[tuple[int, int, float]]:
    """One-to-one matching of reference and predicted lesions by maximum bipartite matching on Dice.

    Cost ``1 - Dice`` for a pair with Dice at least ``threshold``, ``1 + 1e-6`` otherwise; the assignment of least
    total cost (``scipy.optimize.linear_sum_assignment``) keeps its pairs of cost below 1 (``panoptica``'s
    ``MaxBipartiteMatching``).

    Args:
        ref_lesions: numbered reference lesions (see :func:`connected_lesions`).
        n_ref: number of reference lesions.
        pred_lesions: numbered predicted lesions, same shape.
        n_pred: number of predicted lesions.
        threshold: least Dice of a pair that may match.

    Returns:
        ``(reference lesion, predicted lesion, Dice)`` of each match, by reference lesion.
    """
    from scipy.optimize import linear_sum_assignment

    if n_ref == 0 or n_pred == 0:
        return []
    dice = _pair_dice(ref_lesions, n_ref, pred_lesions, n_pred)
    cost = np.where(dice >= threshold, 1.0 - dice, 1.0 + 1e-6)
    rows, cols = linear_sum_assignment(cost)
    matches = [(int(r) + 1, int(c) + 1, float(dice[r, c])) for r, c in zip(rows, cols) if cost[r, c] < 1.0]
    return sorted(matches)


def _union_slices(a: tuple[slice, ...], b: tuple[slice, ...]) -> tuple[slice, ...]:
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b))


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else math.nan


def region_lesion_metrics(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    nsd_tolerance_mm: float | None = None,
    hd95: str = "pooled",
) -> dict[str, Any]:
    """Lesion-wise metrics of one region (definitions in the module docstring).

    Each matched pair's distances are computed on the union bounding box of its two lesions only, which gives the
    same values as on the whole volume (see :mod:`brats_cggm.brats.metrics.surface`).

    Args:
        pred: predicted boolean mask of the region ``(X, Y, Z)``.
        ref: reference boolean mask, same shape.
        spacing: voxel size along each axis, mm.
        nsd_tolerance_mm: NSD tolerance of a matched pair; None takes the smallest voxel size (the official one).
        hd95: ``"pooled"`` (official) or ``"directed"`` (MONAI's).

    Returns:
        ``n_ref_instances``, ``n_pred_instances``, ``tp``, ``fp``, ``fn``, ``prec``, ``rec``, ``rq``, ``sq_dsc``,
        ``sq_dsc_std``, ``pq_dsc``, ``sq_hd95``, ``sq_hd95_std``, ``sq_nsd``, ``sq_nsd_std`` and
        ``reference_lesions``: per reference lesion ``voxel_count``, ``volume`` (mm³), ``is_matched`` and, when
        matched, ``dsc``, ``hd95``, ``nsd``.

    Raises:
        ValueError: if the shapes differ, the spacing is not positive or ``hd95`` is unknown.
    """
    pred, ref = np.asarray(pred, bool), np.asarray(ref, bool)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != pred.ndim or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing must be {pred.ndim} positive finite numbers, got {spacing}")
    if hd95 not in ("pooled", "directed"):
        raise ValueError(f"hd95 must be 'pooled' or 'directed', got {hd95!r}")
    tolerance = min(spacing) if nsd_tolerance_mm is None else float(nsd_tolerance_mm)
    ref_lesions, n_ref = connected_lesions(ref)
    pred_lesions, n_pred = connected_lesions(pred)
    matches = match_lesions(ref_lesions, n_ref, pred_lesions, n_pred)
    ref_boxes, pred_boxes = ndimage.find_objects(ref_lesions), ndimage.find_objects(pred_lesions)
    voxel_volume = float(np.prod(spacing))
    ref_counts = np.bincount(ref_lesions[ref_lesions > 0], minlength=n_ref + 1)
    lesions: dict[int, dict[str, Any]] = {
        i: {"voxel_count": int(ref_counts[i]), "volume": float(ref_counts[i]) * voxel_volume, "is_matched": False}
        for i in range(1, n_ref + 1)
    }
    scores: dict[str, list[float]] = {"dsc": [], "hd95": [], "nsd": []}
    for r, p, dice in matches:
        box = _union_slices(ref_boxes[r - 1], pred_boxes[p - 1])
        ref_to_pred, pred_to_ref = surface_distances(pred_lesions[box] == p, ref_lesions[box] == r, spacing)
        pair = {
            "dsc": dice,
            "hd95": hd95_from_distances(ref_to_pred, pred_to_ref, hd95),
            "nsd": normalized_surface_dice_from_distances(ref_to_pred, pred_to_ref, tolerance),
        }
        lesions[r].update(is_matched=True, **pair)
        for key, value in pair.items():
            scores[key].append(value)
    tp = len(matches)
    fp, fn = n_pred - tp, n_ref - tp
    out: dict[str, Any] = {
        "n_ref_instances": n_ref,
        "n_pred_instances": n_pred,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "prec": _ratio(tp, tp + fp),
        "rec": _ratio(tp, tp + fn),
    }
    if n_ref + n_pred == 0:
        out["rq"] = math.nan
        out |= {f"sq_{m}{s}": math.nan for m in scores for s in ("", "_std")}
    elif tp == 0:
        out["rq"] = 0.0
        out |= {"sq_dsc": 0.0, "sq_hd95": math.inf, "sq_nsd": 0.0}
        out |= {f"sq_{m}_std": math.nan for m in scores}
    else:
        out["rq"] = tp / (tp + 0.5 * fp + 0.5 * fn)
        for m, values in scores.items():
            out[f"sq_{m}"] = float(np.mean(values))
            out[f"sq_{m}_std"] = float(np.std(values))
    out["pq_dsc"] = out["sq_dsc"] * out["rq"]
    out["reference_lesions"] = [lesions[i] for i in sorted(lesions)]
    return out


def penalised_lesionwise_scores(
    lesion_result: Mapping[str, Any],
    min_lesion_volume_mm3: float = 0.0,
    hd95_max_mm: float = OFFICIAL_HD95_MAX_MM,
) -> dict[str, float]:
    """Lesion-wise Dice, HD95 and NSD counting every unmatched lesion (``parse_mets_results`` of the official package).

    Args:
        lesion_result: a result of :func:`region_lesion_metrics`.
        min_lesion_volume_mm3: reference lesions smaller than this are left out of the scores (not of ``fp``);
            the official parser's default is 20.
        hd95_max_mm: HD95 of an unmatched lesion.

    Returns:
        ``{"dsc", "dsc_std", "hd95", "hd95_std", "nsd", "nsd_std"}``: means and population standard deviations;
        NaN when no reference lesion reaches the volume threshold.
    """
    values: dict[str, list[float]] = {"dsc": [], "hd95": [], "nsd": []}
    for lesion in lesion_result["reference_lesions"]:
        if lesion["volume"] < min_lesion_volume_mm3:
            continue
        matched = lesion["is_matched"]
        values["dsc"].append(lesion["dsc"] if matched else 0.0)
        values["hd95"].append(lesion["hd95"] if matched else hd95_max_mm)
        values["nsd"].append(lesion["nsd"] if matched else 0.0)
    if not values["dsc"]:
        return {f"{m}{s}": math.nan for m in values for s in ("", "_std")}
    for key, penalty in (("dsc", 0.0), ("hd95", hd95_max_mm), ("nsd", 0.0)):
        values[key].extend([penalty] * int(lesion_result["fp"]))
    out = {}
    for m, v in values.items():
        out[m], out[f"{m}_std"] = float(np.mean(v)), float(np.std(v))
    return out


def case_challenge_metrics(
    pred_labels: np.ndarray,
    ref_labels: np.ndarray,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    convention: str | LabelConvention = "brats2023",
    ref_convention: str | LabelConvention | None = None,
    regions: Sequence[str] | None = None,
    hd95: str = "pooled",
    global_nsd_tolerance_mm: float = OFFICIAL_GLOBAL_NSD_TOLERANCE,
    lesion_nsd_tolerance_mm: float | None = None,
    hd95_max_mm: float = OFFICIAL_HD95_MAX_MM,
    global_in_voxels: bool = False,
) -> dict[str, dict[str, Any]]:
    """Global and lesion-wise metrics of every challenge region of one case.

    Args:
        pred_labels: predicted label map ``(X, Y, Z)``.
        ref_labels: reference label map, same shape.
        spacing: voxel size (mm).
        convention: label convention of the prediction.
        ref_convention: label convention of the reference (``convention`` when None).
        regions: regions to evaluate; None: ``et``, ``tc``, ``wt``, plus ``netc``, ``snfh`` and, for the 2023
            convention, ``rc`` (see :mod:`brats_cggm.brats.metrics.challenge_regions`).
        hd95: ``"pooled"`` (official) or ``"directed"`` (MONAI's).
        global_nsd_tolerance_mm: NSD tolerance of the global metrics.
        lesion_nsd_tolerance_mm: NSD tolerance of matched lesions (None: the smallest voxel size).
        hd95_max_mm: global HD95 when prediction and reference do not overlap.
        global_in_voxels: compute the global HD95 and NSD in voxels, as the official evaluator does (it does not
            pass the spacing to them); the same as mm on 1 mm isotropic data.

    Returns:
        Region to the :func:`region_lesion_metrics` result plus ``global_bin_dsc``, ``global_bin_hd95`` and
        ``global_bin_nsd``.

    Raises:
        ValueError: if the shapes differ, a region is not defined for a convention, or an option is invalid.
    """
    ref_convention = convention if ref_convention is None else ref_convention
    pred_labels, ref_labels = np.asarray(pred_labels), np.asarray(ref_labels)
    if pred_labels.shape != ref_labels.shape:
        raise ValueError(f"prediction shape {pred_labels.shape} differs from reference shape {ref_labels.shape}")
    if regions is None:
        wanted = tuple(challenge_region_masks(np.zeros((1, 1, 1), np.uint8), ref_convention))
        pred_defined = challenge_region_masks(np.zeros((1, 1, 1), np.uint8), convention)
        regions = tuple(r for r in CHALLENGE_REGIONS if r in wanted and r in pred_defined)
    # Every metric is unchanged by cropping to the box of all labelled voxels (see surface_metrics); the crop
    # saves the labelling and overlap passes over the empty part of the volume.
    box = union_bounding_box(pred_labels != 0, ref_labels != 0)
    box = box or tuple(slice(0, 1) for _ in pred_labels.shape)
    pred_labels, ref_labels = pred_labels[box], ref_labels[box]
    pred_masks = challenge_region_masks(pred_labels, convention, tuple(regions))
    ref_masks = challenge_region_masks(ref_labels, ref_convention, tuple(regions))
    global_spacing = (1.0,) * pred_labels.ndim if global_in_voxels else spacing
    out = {}
    for region in regions:
        result = region_lesion_metrics(pred_masks[region], ref_masks[region], spacing, lesion_nsd_tolerance_mm, hd95)
        glob = global_metrics(
            pred_masks[region], ref_masks[region], global_spacing, global_nsd_tolerance_mm, hd95, hd95_max_mm
        )
        result |= {f"global_bin_{k}": v for k, v in glob.items()}
        out[region] = result
    return out


def official_row(case_result: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """One case in the column names of the official CSV (``parse_seg_results`` of ``brats-evaluation``).

    Args:
        case_result: a result of :func:`case_challenge_metrics`.

    Returns:
        ``all_instance_{tp,fp,fn,prec,rec,f1}_<region>``, ``global_{dsc,nsd,hd95}_<region>`` and
        ``lesionwise_{dsc,nsd,hd95}_{mean,std}_<region>`` for each region.
    """
    row: dict[str, float] = {}
    for region, r in case_result.items():
        for name, key in (("tp", "tp"), ("fp", "fp"), ("fn", "fn"), ("prec", "prec"), ("rec", "rec"), ("f1", "rq")):
            row[f"all_instance_{name}_{region}"] = r[key]
        for metric in ("dsc", "nsd", "hd95"):
            row[f"global_{metric}_{region}"] = r[f"global_bin_{metric}"]
        for metric in ("dsc", "nsd", "hd95"):
            row[f"lesionwise_{metric}_mean_{region}"] = r[f"sq_{metric}"]
            row[f"lesionwise_{metric}_std_{region}"] = r[f"sq_{metric}_std"]
    return row
