"""Evaluation of segmentation files (the API of ``brats-cggm-evaluate``): BraTS challenge metrics, or legacy ones.

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

import csv
import io
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch

from brats_cggm.brats.data.discovery import PATTERN_PRESETS, check_unique_case_ids
from brats_cggm.brats.data.labels import REGIONS, check_labels, labels_to_regions
from brats_cggm.brats.data.nifti_checks import (
    AFFINE_TOLERANCE,
    InputFileError,
    check_same_grid,
    load_checked_volume,
    strip_nifti_extension,
)
from brats_cggm.brats.metrics.challenge_regions import CHALLENGE_REGIONS, RESECTION_CAVITY_LABEL
from brats_cggm.brats.metrics.lesion import case_challenge_metrics, official_row, penalised_lesionwise_scores
from brats_cggm.brats.metrics.surface import OFFICIAL_HD95_MAX_MM

__all__ = [
    "AUTO",
    "EVAL_REGIONS",
    "HD95_EMPTY_MM",
    "METRIC_NAMES",
    "ChallengeOptions",
    "EvaluationResult",
    "case_metrics",
    "challenge_columns",
    "challenge_row",
    "detect_label_convention",
    "dice",
    "evaluate_cases",
    "evaluate_folders",
    "evaluate_items",
    "find_predictions",
    "find_references",
    "hd95",
    "summarize",
    "summary_markdown",
    "write_results",
]

#: HD95 when exactly one of prediction and reference is empty (legacy metrics; the challenge metrics use 373).
HD95_EMPTY_MM = 373.13

#: Regions of the legacy metrics, in the order of the BraTS challenge tables.
EVAL_REGIONS: tuple[str, ...] = ("et", "tc", "wt")

#: Per-case columns of the legacy metrics.
METRIC_NAMES: tuple[str, ...] = tuple(f"{m}_{r}" for m in ("dice", "hd95") for r in EVAL_REGIONS)

#: Label convention value that detects each file's convention from its values (:func:`detect_label_convention`).
AUTO = "auto"

_SEG_SUFFIXES = tuple(sorted({p["seg"] for p in PATTERN_PRESETS.values()}))

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
    pred = labels_to_regions(np.asarray(pred_labels), convention) > 0.5
    ref = labels_to_regions(np.asarray(ref_labels), ref_convention or convention) > 0.5
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


def _null(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


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


#: Columns of the markdown table: (title, column stem).
_MARKDOWN_COLUMNS: tuple[tuple[str, str], ...] = (
    ("Dice", "global_dsc"),
    ("HD95", "global_hd95"),
    ("NSD", "global_nsd"),
    ("lesion Dice", "lesionwise_penalised_dsc"),
    ("lesion HD95", "lesionwise_penalised_hd95"),
    ("F1 (RQ)", "all_instance_f1"),
    ("PQ", "pq_dsc"),
)


def _mean_std(stats: Mapping[str, Any]) -> str:
    if stats["n"] == 0:
        return "n/a"
    return f"{stats['mean']:.4f} ± {stats['std']:.4f}"


def summary_markdown(summary: Mapping[str, Any]) -> str:
    """A markdown table of a challenge summary: one row per region, mean ± std (population) over the cases.

    Args:
        summary: a result of :func:`summarize` with the challenge metrics.

    Returns:
        The table, with a line saying what the columns are.

    Raises:
        ValueError: if the summary holds the legacy metrics.
    """
    if "regions" not in summary:
        raise ValueError("summary_markdown needs a summary of the challenge metrics")
    header = ["region", *(title for title, _ in _MARKDOWN_COLUMNS), "empty reference"]
    lines = [
        f"{summary['n_evaluated']} of {summary['n_cases']} cases evaluated; mean ± std over the cases (population); "
        f"Dice, HD95 (mm, {summary['hd95']}), NSD: global per region; lesion Dice and HD95 count unmatched lesions as "
        f"0 and {summary['hd95_max_mm']:g} mm; F1 (RQ) and PQ: lesion detection.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for region in summary["regions"]:
        cells = [_mean_std(summary["metrics"][f"{stem}_{region}"]) for _, stem in _MARKDOWN_COLUMNS]
        lines.append(f"| {region.upper()} | " + " | ".join(cells) + f" | {summary['empty_reference'][region]} |")
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.6g}" if isinstance(value, float) else value


def _csv_text(result: EvaluationResult) -> str:
    buffer = io.StringIO()
    fields = ["case_id", "status", *result.columns, "error"]
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n", restval="")
    writer.writeheader()
    for row in result.rows:
        writer.writerow({k: _cell(row.get(k)) for k in fields})
    return buffer.getvalue()


def write_results(
    result: EvaluationResult,
    csv_path: str | os.PathLike,
    json_path: str | os.PathLike,
    overwrite: bool = False,
    markdown_path: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Write the per-case CSV, the summary JSON and (challenge metrics) the markdown table, each atomically.

    Args:
        result: the evaluation.
        csv_path: per-case CSV file.
        json_path: summary JSON file (NaN as ``null``).
        overwrite: replace existing files.
        markdown_path: markdown table file (see :func:`summary_markdown`); None writes none.

    Returns:
        The summary.

    Raises:
        FileExistsError: if a file exists and ``overwrite`` is False (nothing is written then).
        ValueError: if a markdown table is asked of the legacy metrics.
    """
    from brats_cggm.core.files import atomic_write_text, write_json

    paths = [Path(csv_path), Path(json_path)] + ([Path(markdown_path)] if markdown_path is not None else [])
    for path in paths:
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path}: exists; pass --overwrite to replace it")
    summary = summarize(result)
    table = summary_markdown(summary) if markdown_path is not None else None
    atomic_write_text(csv_path, _csv_text(result))
    write_json(json_path, _nulls(summary), allow_nan=False)
    if table is not None:
        atomic_write_text(markdown_path, table)
    return summary


def _nulls(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _nulls(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nulls(v) for v in value]
    return _null(value)


def _case_key(name: str) -> str:
    stem = strip_nifti_extension(name)
    for suffix in _SEG_SUFFIXES:
        if stem.endswith(suffix):
            return stem[: -len(suffix)]
    return stem


def _nifti_in(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.name.endswith((".nii.gz", ".nii"))
    )


def find_predictions(pred_dir: str | os.PathLike) -> dict[str, str]:
    """Prediction files of a folder, by case id (the file name without ``.nii.gz``).

    Raises:
        FileNotFoundError: if the folder does not exist.
        DuplicateCaseError: if two files give one case id (``x.nii`` and ``x.nii.gz``), naming both.
    """
    root = Path(pred_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: prediction folder does not exist")
    found = [
        (strip_nifti_extension(p.name), str(p)) for p in _nifti_in(root) if not p.name.endswith("_probabilities.nii.gz")
    ]
    check_unique_case_ids(found, root)
    return dict(found)


def find_references(ref_dir: str | os.PathLike) -> dict[str, str]:
    """Reference label files, by case id.

    Reads a folder of label files (``<case>.nii.gz`` or ``<case>_seg.nii.gz``, e.g. MSD ``labelsTr``), an MSD
    folder (its ``labelsTr``), or a BraTS folder of case folders (``<case>/<case>_seg.nii.gz`` or ``-seg``).

    Raises:
        FileNotFoundError: if the folder does not exist or holds no reference.
        DuplicateCaseError: if two references give one case id (``x.nii.gz`` and ``x_seg.nii.gz``, or a file and
            a case folder ``x/``), naming both.
    """
    root = Path(ref_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: reference folder does not exist")
    if (root / "labelsTr").is_dir():
        root = root / "labelsTr"
    found = [(_case_key(p.name), str(p)) for p in _nifti_in(root)]
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        segs = [p for p in _nifti_in(sub) if strip_nifti_extension(p.name).endswith(_SEG_SUFFIXES)]
        exact = [p for p in segs if _case_key(p.name) == sub.name]
        if exact or len(segs) == 1:
            found.append((sub.name, str((exact or segs)[0])))
    check_unique_case_ids(found, root)
    refs = dict(found)
    if not refs:
        raise FileNotFoundError(f"{root}: no reference label files (<case>.nii.gz, or <case>/<case>_seg.nii.gz)")
    return refs


def evaluate_folders(
    pred_dir: str | os.PathLike,
    ref_dir: str | os.PathLike,
    convention: str = "brats2021",
    ref_convention: str | None = None,
    affine_tolerance: float = AFFINE_TOLERANCE,
    options: ChallengeOptions | None = None,
) -> EvaluationResult:
    """Evaluate every prediction of ``pred_dir`` against ``ref_dir`` (see :func:`find_references`).

    Cases on one side only are kept, with status ``missing_prediction`` or ``missing_reference``. The other
    arguments are those of :func:`evaluate_cases`.
    """
    preds, refs = find_predictions(pred_dir), find_references(ref_dir)
    pairs = {c: (preds.get(c), refs.get(c)) for c in set(preds) | set(refs)}
    return evaluate_cases(pairs, convention, ref_convention, affine_tolerance, options)


def evaluate_items(
    items: Sequence[Mapping[str, Any]],
    pred_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    convention: str = "brats2021",
    ref_convention: str | None = None,
    name_template: str = "{case_id}.nii.gz",
    overwrite: bool = False,
    hd95: str | None = None,
) -> dict[str, Any]:
    """Evaluate the predictions of labelled data list items and write ``metrics.csv`` and ``metrics_summary.json``.

    For the bundle's ``evaluate.yaml``. With ``hd95`` the challenge metrics (and ``metrics.md``), else the legacy
    ones.

    Args:
        items: cases with ``case_id`` and ``label`` (``DatasetSpec.items``).
        pred_dir: folder of the predictions.
        output_dir: where to write the results.
        convention: label convention of the predictions.
        ref_convention: label convention of the labels.
        name_template: prediction file names.
        overwrite: replace existing result files.
        hd95: ``"pooled"`` or ``"directed"``: the challenge metrics with that HD95 (see :class:`ChallengeOptions`);
            None: the legacy metrics.

    Returns:
        The summary.
    """
    options = None if hd95 is None else ChallengeOptions(hd95=hd95)
    pairs = {}
    for item in items:
        pred = Path(pred_dir) / name_template.format(case_id=item["case_id"])
        pairs[item["case_id"]] = (str(pred) if pred.is_file() else None, item.get("label"))
    result = evaluate_cases(pairs, convention, ref_convention, options=options)
    out = Path(output_dir)
    markdown = None if options is None else out / "metrics.md"
    return write_results(result, out / "metrics.csv", out / "metrics_summary.json", overwrite, markdown)
