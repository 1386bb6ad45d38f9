"""Evaluation of segmentation files (the API of ``brats-cggm-evaluate``): BraTS challenge metrics, or legacy ones.

This module reads and checks the label files of given pairs and summarizes the scores; one case's metrics are
:mod:`~brats_cggm.brats.metrics.case_scores`, finding the files of two folders
:mod:`~brats_cggm.brats.metrics.pairing`, writing the CSV, JSON and markdown
:mod:`~brats_cggm.brats.metrics.evaluation_report`.

Challenge metrics (:class:`ChallengeOptions`, what the command computes), per region of
:mod:`brats_cggm.brats.metrics.challenge_regions` (``et``, ``tc``, ``wt``, ``netc``, ``snfh``; ``rc`` with BraTS 2023
labels), with the definitions and edge cases of the official evaluator (``brats-evaluation``, see
:mod:`brats_cggm.brats.metrics.surface` and :mod:`brats_cggm.brats.metrics.lesion`) and the column names of its CSV
(``brats_evaluation/metrics_parser.py``, ``parse_seg_results``): ``global_{dsc,hd95,nsd}_<r>``,
``all_instance_{tp,fp,fn,prec,rec,f1}_<r>`` (``f1`` is the recognition quality RQ) and
``lesionwise_{dsc,hd95,nsd}_{mean,std}_<r>`` (means over matched lesions: ``sq_dsc``, ``sq_hd95``, ``sq_nsd``);
added here: ``pq_dsc_<r>`` (``sq_dsc * rq``) and ``lesionwise_penalised_{dsc,hd95,nsd}_<r>`` (every unmatched
reference or predicted lesion counts as Dice 0, HD95 373 mm, NSD 0: ``parse_mets_results``, see
:func:`~brats_cggm.brats.metrics.lesion.penalised_lesionwise_scores`).

Values that are not finite: an infinite HD95 (a region with lesions on both sides but no match has
``lesionwise_hd95_mean`` infinite) is written as 373 mm, as the official CSV writes the global HD95; NaN (e.g.
precision 0/0, lesion-wise metrics of a region empty on both sides) is an empty CSV cell and ``null`` in JSON, and
left out of the statistics (each reports its ``n``). A region empty on both sides scores global Dice 1, HD95 0 and
NSD 1 (the convention of the earlier BraTS evaluators; the official one reports NaN).

Legacy metrics (``options=None``): Dice and HD95 of ET, TC and WT, a region empty in both prediction and reference
scoring Dice 1 and HD95 0, in only one of them Dice 0 and HD95 :data:`HD95_EMPTY_MM` (373.13 mm, the diagonal of
the 240 x 240 x 155 mm BraTS volume); HD95 is the larger of the two directed 95th-percentile surface distances
(``monai.metrics.compute_hausdorff_distance``), in mm with the reference's voxel spacing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import nibabel as nib
import numpy as np

from brats_cggm.brats.data.labels import check_labels
from brats_cggm.brats.data.nifti_checks import (
    AFFINE_TOLERANCE,
    InputFileError,
    check_same_grid,
    load_checked_volume,
)
from brats_cggm.brats.metrics.case_scores import (
    HD95_EMPTY_MM,
    METRIC_NAMES,
    ChallengeOptions,
    case_metrics,
    challenge_columns,
    challenge_row,
    detect_label_convention,
)
from brats_cggm.brats.metrics.challenge_regions import CHALLENGE_REGIONS, RESECTION_CAVITY_LABEL

__all__ = [
    "AUTO",
    "EvaluationResult",
    "evaluate_cases",
    "summarize",
]


#: Label convention value that detects each file's convention from its values (:func:`detect_label_convention`).
AUTO = "auto"


def _read_labels(path: str, source: str) -> tuple[nib.Nifti1Image, np.ndarray]:
    # Label maps may legitimately be all zero (no tumour): only the values are checked.
    image, data = load_checked_volume(path, ndim=3, check_values=False)
    if np.issubdtype(data.dtype, np.floating):
        if not np.isfinite(data).all():
            raise InputFileError(path, "contains NaN or infinite values")
        if not np.array_equal(data, np.round(data)):
            raise InputFileError(path, f"holds non-integer values: not a {source} label map")
    return image, np.asarray(data).astype(np.int16)


def _check_values(path: str, data: np.ndarray, convention: str, challenge: bool) -> None:
    if challenge and convention == "brats2023" and (data == RESECTION_CAVITY_LABEL).any():
        # BraTS 2024 post-treatment glioma labels: 4 is the resection cavity, a region of its own.
        data = np.where(data == RESECTION_CAVITY_LABEL, 0, data)
    try:
        check_labels(data, convention, path)
    except ValueError as exc:
        message = str(exc).removeprefix(f"{path}: ")
        if challenge and convention == "brats2023":
            message += " (label 4, the resection cavity, is also valid)"
        raise InputFileError(path, message) from exc


def _resolve_conventions(
    pred_data: np.ndarray, ref_data: np.ndarray, convention: str, ref_convention: str
) -> tuple[str, str]:
    detected = {}
    for side, data, given in (("pred", pred_data, convention), ("ref", ref_data, ref_convention)):
        detected[side] = given if given != AUTO else detect_label_convention(np.unique(data).tolist())
    fallback = detected["ref"] or detected["pred"] or "brats2021"
    return detected["pred"] or fallback, detected["ref"] or fallback


def _evaluate_pair(
    pred: str, ref: str, convention: str, ref_convention: str, tolerance: float, options: ChallengeOptions | None
) -> tuple[dict[str, float], str, str]:
    pred_image, pred_data = _read_labels(pred, "prediction")
    ref_image, ref_data = _read_labels(ref, "reference")
    if options is None and AUTO in (convention, ref_convention):
        raise ValueError("label convention 'auto' needs the challenge metrics (options)")
    convention, ref_convention = _resolve_conventions(pred_data, ref_data, convention, ref_convention)
    _check_values(pred, pred_data, convention, options is not None)
    _check_values(ref, ref_data, ref_convention, options is not None)
    check_same_grid([(ref, ref_image), (pred, pred_image)], tolerance=tolerance)
    spacing = tuple(float(z) for z in ref_image.header.get_zooms()[:3])
    if options is None:
        return case_metrics(pred_data, ref_data, spacing, convention, ref_convention), convention, ref_convention
    row = challenge_row(pred_data, ref_data, spacing, convention, ref_convention, options)
    return row, convention, ref_convention


@dataclass
class EvaluationResult:
    """Per-case rows and missing or failed cases of an evaluation.

    Attributes:
        rows: one dict per case (``case_id``, ``status``, the metrics, ``error``), sorted by case id.
        convention: label convention of the predictions (``auto``: detected per file, see ``conventions``).
        ref_convention: label convention of the references.
        options: the challenge metric settings, or None for the legacy metrics.
        columns: the metric columns, in order.
        conventions: case id to the ``(prediction, reference)`` conventions used.
    """

    rows: list[dict[str, Any]] = field(default_factory=list)
    convention: str = "brats2021"
    ref_convention: str = "brats2021"
    options: ChallengeOptions | None = None
    columns: list[str] = field(default_factory=lambda: list(METRIC_NAMES))
    conventions: dict[str, tuple[str, str]] = field(default_factory=dict)

    def ids(self, status: str) -> list[str]:
        """Case ids with the given ``status`` (``ok``, ``missing_prediction``, ``missing_reference``, ``error``)."""
        return [r["case_id"] for r in self.rows if r["status"] == status]

    @property
    def complete(self) -> bool:
        """Whether every case was evaluated."""
        return all(r["status"] == "ok" for r in self.rows)

    @property
    def regions(self) -> list[str]:
        """The regions of the challenge metrics found in the rows (empty for the legacy metrics)."""
        if self.options is None:
            return []
        return [r for r in CHALLENGE_REGIONS if f"global_dsc_{r}" in self.columns]


def evaluate_cases(
    pairs: Mapping[str, tuple[str | None, str | None]],
    convention: str = "brats2021",
    ref_convention: str | None = None,
    affine_tolerance: float = AFFINE_TOLERANCE,
    options: ChallengeOptions | None = None,
) -> EvaluationResult:
    """Evaluate predictions against references.

    Args:
        pairs: case id to ``(prediction file, reference file)``; None marks a missing side.
        convention: label convention of the predictions, or ``"auto"`` (challenge metrics only) to detect it from
            each file's values (:func:`detect_label_convention`; values that fit 2021 and 2023 alike take the
            other side's, else ``brats2021``).
        ref_convention: label convention of the references (``convention`` when None).
        affine_tolerance: largest allowed affine difference between prediction and reference.
        options: the challenge metrics' settings; None computes the legacy metrics.

    Returns:
        The result; a case that fails (bad file, shape or affine mismatch) gets status ``error``. Its columns are
        the union of the cases' columns (``rc`` ones only if some case has 2023 labels on both sides).
    """
    ref_convention = ref_convention or convention
    result = EvaluationResult(convention=convention, ref_convention=ref_convention, options=options)
    regions: set[str] = set()
    for case_id in sorted(pairs):
        pred, ref = pairs[case_id]
        row: dict[str, Any] = {"case_id": case_id, "status": "ok", "error": ""}
        if options is None:
            row |= dict.fromkeys(METRIC_NAMES)
        if pred is None:
            row["status"] = "missing_prediction"
        elif ref is None:
            row["status"] = "missing_reference"
        else:
            try:
                metrics, used, ref_used = _evaluate_pair(
                    str(pred), str(ref), convention, ref_convention, affine_tolerance, options
                )
                row.update(metrics)
                result.conventions[case_id] = (used, ref_used)
                regions |= {k.removeprefix("global_dsc_") for k in metrics if k.startswith("global_dsc_")}
            except Exception as exc:  # one bad case is reported, the others still count
                row["status"] = "error"
                row["error"] = " ".join(str(exc).split())
        result.rows.append(row)
    if options is not None:
        result.columns = challenge_columns([r for r in CHALLENGE_REGIONS if r in regions])
    return result


def _statistics(values: Sequence[Any]) -> dict[str, Any]:
    array = np.asarray([v for v in values if v is not None], dtype=np.float64)
    array = array[~np.isnan(array)]
    if not array.size:
        return {"mean": None, "std": None, "median": None, "n": 0}
    stats = {"mean": array.mean(), "std": array.std(), "median": np.median(array)}
    return {k: float(v) for k, v in stats.items()} | {"n": int(array.size)}


def summarize(result: EvaluationResult) -> dict[str, Any]:
    """Mean, standard deviation (population) and median of every metric over the evaluated cases.

    NaN values are left out (each statistic reports its ``n``).

    Args:
        result: the evaluation.

    Returns:
        A JSON-ready dict: the statistics under ``"metrics"``; the missing or failed cases; for the challenge
        metrics also the settings and, per region, the number of evaluated cases whose reference region is empty
        (``empty_reference``) and of those whose prediction is empty too (``empty_both``).
    """
    ok = [r for r in result.rows if r["status"] == "ok"]
    metrics = {name: _statistics([r.get(name) for r in ok]) for name in result.columns}
    summary: dict[str, Any] = {
        "label_convention": result.convention,
        "reference_label_convention": result.ref_convention,
        "n_cases": len(result.rows),
        "n_evaluated": len(ok),
        "metrics": metrics,
        "missing_predictions": result.ids("missing_prediction"),
        "missing_references": result.ids("missing_reference"),
        "errors": {r["case_id"]: r["error"] for r in result.rows if r["status"] == "error"},
    }
    if result.options is None:
        return summary | {"hd95_empty_mm": HD95_EMPTY_MM}
    empty_ref, empty_both = {}, {}
    for region in result.regions:
        # tp + fn counts the reference lesions, tp + fp the predicted ones
        rows = [r for r in ok if f"all_instance_tp_{region}" in r]
        n_ref = [r[f"all_instance_tp_{region}"] + r[f"all_instance_fn_{region}"] for r in rows]
        n_pred = [r[f"all_instance_tp_{region}"] + r[f"all_instance_fp_{region}"] for r in rows]
        empty_ref[region] = sum(n == 0 for n in n_ref)
        empty_both[region] = sum(a == 0 and b == 0 for a, b in zip(n_ref, n_pred))
    if AUTO in (result.convention, result.ref_convention):
        summary["detected_label_conventions"] = {c: list(v) for c, v in result.conventions.items()}
    return summary | {
        "regions": result.regions,
        "empty_reference": empty_ref,
        "empty_both": empty_both,
        "hd95": result.options.hd95,
        "hd95_max_mm": result.options.hd95_max_mm,
        "min_lesion_volume_mm3": result.options.min_lesion_volume_mm3,
        "non_finite_values": f"infinite HD95 written as {result.options.hd95_max_mm:g}; NaN as null (empty in CSV)",
    }
