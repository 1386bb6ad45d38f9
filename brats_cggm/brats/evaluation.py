"""BraTS-style evaluation of segmentation files: Dice and HD95 of ET, TC and WT (the API of ``brats-cggm-evaluate``).

Conventions of the BraTS challenge: a region empty in both prediction and reference scores Dice 1 and
HD95 0; empty in only one of them, Dice 0 and HD95 :data:`HD95_EMPTY_MM` (373.13 mm, the diagonal of the
240 x 240 x 155 mm BraTS volume). HD95 is the larger of the two directed 95th-percentile surface distances
(``monai.metrics.compute_hausdorff_distance``), in mm with the reference's voxel spacing.
"""

from __future__ import annotations

import csv
import io
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch

from brats_cggm.brats.data import PATTERN_PRESETS
from brats_cggm.brats.labels import REGIONS, check_labels, labels_to_regions
from brats_cggm.brats.nifti_checks import (
    AFFINE_TOLERANCE,
    InputFileError,
    check_same_grid,
    load_checked_volume,
    strip_nifti_extension,
)

__all__ = [
    "EVAL_REGIONS",
    "HD95_EMPTY_MM",
    "METRIC_NAMES",
    "EvaluationResult",
    "case_metrics",
    "dice",
    "evaluate_cases",
    "evaluate_folders",
    "evaluate_items",
    "find_predictions",
    "find_references",
    "hd95",
    "summarize",
    "write_results",
]

#: HD95 when exactly one of prediction and reference is empty (the BraTS challenge value).
HD95_EMPTY_MM = 373.13

#: Regions reported, in the order of the BraTS challenge tables.
EVAL_REGIONS: tuple[str, ...] = ("et", "tc", "wt")

#: Per-case metric columns.
METRIC_NAMES: tuple[str, ...] = tuple(f"{m}_{r}" for m in ("dice", "hd95") for r in EVAL_REGIONS)

_SEG_SUFFIXES = tuple(sorted({p["seg"] for p in PATTERN_PRESETS.values()}))


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


def _read_labels(path: str, convention: str, tolerance_source: str) -> tuple[nib.Nifti1Image, np.ndarray]:
    # Label maps may legitimately be all zero (no tumour): only the values are checked.
    image, data = load_checked_volume(path, ndim=3, check_values=False)
    if np.issubdtype(data.dtype, np.floating):
        if not np.isfinite(data).all():
            raise InputFileError(path, "contains NaN or infinite values")
        if not np.array_equal(data, np.round(data)):
            raise InputFileError(path, f"holds non-integer values: not a {tolerance_source} label map")
    try:
        check_labels(data, convention, path)
    except ValueError as exc:
        raise InputFileError(path, str(exc).removeprefix(f"{path}: ")) from exc
    return image, np.asarray(data).astype(np.int16)


def _evaluate_pair(pred: str, ref: str, convention: str, ref_convention: str, tolerance: float) -> dict[str, float]:
    pred_image, pred_data = _read_labels(pred, convention, "prediction")
    ref_image, ref_data = _read_labels(ref, ref_convention, "reference")
    check_same_grid([(ref, ref_image), (pred, pred_image)], tolerance=tolerance)
    spacing = tuple(float(z) for z in ref_image.header.get_zooms()[:3])
    return case_metrics(pred_data, ref_data, spacing, convention, ref_convention)


@dataclass
class EvaluationResult:
    """Per-case rows and missing or failed cases of an evaluation.

    Attributes:
        rows: one dict per case (``case_id``, ``status``, the metrics, ``error``), sorted by case id.
        convention: label convention of the predictions.
        ref_convention: label convention of the references.
    """

    rows: list[dict[str, Any]] = field(default_factory=list)
    convention: str = "brats2021"
    ref_convention: str = "brats2021"

    def ids(self, status: str) -> list[str]:
        """Case ids with the given ``status`` (``ok``, ``missing_prediction``, ``missing_reference``, ``error``)."""
        return [r["case_id"] for r in self.rows if r["status"] == status]

    @property
    def complete(self) -> bool:
        """Whether every case was evaluated."""
        return all(r["status"] == "ok" for r in self.rows)


def evaluate_cases(
    pairs: Mapping[str, tuple[str | None, str | None]],
    convention: str = "brats2021",
    ref_convention: str | None = None,
    affine_tolerance: float = AFFINE_TOLERANCE,
) -> EvaluationResult:
    """Evaluate predictions against references.

    Args:
        pairs: case id to ``(prediction file, reference file)``; None marks a missing side.
        convention: label convention of the predictions.
        ref_convention: label convention of the references (``convention`` when None).
        affine_tolerance: largest allowed affine difference between prediction and reference.

    Returns:
        The result; a case that fails (bad file, shape or affine mismatch) gets status ``error``.
    """
    ref_convention = ref_convention or convention
    result = EvaluationResult(convention=convention, ref_convention=ref_convention)
    for case_id in sorted(pairs):
        pred, ref = pairs[case_id]
        row: dict[str, Any] = {"case_id": case_id, "status": "ok", **dict.fromkeys(METRIC_NAMES), "error": ""}
        if pred is None:
            row["status"] = "missing_prediction"
        elif ref is None:
            row["status"] = "missing_reference"
        else:
            try:
                row.update(_evaluate_pair(str(pred), str(ref), convention, ref_convention, affine_tolerance))
            except Exception as exc:  # one bad case is reported, the others still count
                row["status"] = "error"
                row["error"] = " ".join(str(exc).split())
        result.rows.append(row)
    return result


def summarize(result: EvaluationResult) -> dict[str, Any]:
    """Mean, standard deviation (population) and median of every metric over the evaluated cases.

    Args:
        result: the evaluation.

    Returns:
        A JSON-ready dict with the statistics under ``"metrics"`` and the missing or failed cases listed.
    """
    ok = [r for r in result.rows if r["status"] == "ok"]
    metrics = {}
    for name in METRIC_NAMES:
        values = np.asarray([r[name] for r in ok], dtype=np.float64)
        if values.size:
            stats = {"mean": values.mean(), "std": values.std(), "median": np.median(values)}
            metrics[name] = {k: float(v) for k, v in stats.items()} | {"n": int(values.size)}
        else:
            metrics[name] = {"mean": None, "std": None, "median": None, "n": 0}
    return {
        "label_convention": result.convention,
        "reference_label_convention": result.ref_convention,
        "n_cases": len(result.rows),
        "n_evaluated": len(ok),
        "metrics": metrics,
        "missing_predictions": result.ids("missing_prediction"),
        "missing_references": result.ids("missing_reference"),
        "errors": {r["case_id"]: r["error"] for r in result.rows if r["status"] == "error"},
        "hd95_empty_mm": HD95_EMPTY_MM,
    }


def _csv_text(result: EvaluationResult) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["case_id", "status", *METRIC_NAMES, "error"], lineterminator="\n")
    writer.writeheader()
    for row in result.rows:
        writer.writerow({k: ("" if v is None else (f"{v:.6g}" if isinstance(v, float) else v)) for k, v in row.items()})
    return buffer.getvalue()


def write_results(
    result: EvaluationResult, csv_path: str | os.PathLike, json_path: str | os.PathLike, overwrite: bool = False
) -> dict[str, Any]:
    """Write the per-case CSV and the summary JSON, each atomically.

    Args:
        result: the evaluation.
        csv_path: per-case CSV file.
        json_path: summary JSON file.
        overwrite: replace existing files.

    Returns:
        The summary.

    Raises:
        FileExistsError: if a file exists and ``overwrite`` is False (nothing is written then).
    """
    from brats_cggm.core.files import atomic_write_text, write_json

    for path in (Path(csv_path), Path(json_path)):
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path}: exists; pass --overwrite to replace it")
    summary = summarize(result)
    atomic_write_text(csv_path, _csv_text(result))
    write_json(json_path, summary, allow_nan=False)
    return summary


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
    """Prediction files of a folder, by case id (the file name without ``.nii.gz``)."""
    root = Path(pred_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: prediction folder does not exist")
    return {
        strip_nifti_extension(p.name): str(p) for p in _nifti_in(root) if not p.name.endswith("_probabilities.nii.gz")
    }


def find_references(ref_dir: str | os.PathLike) -> dict[str, str]:
    """Reference label files, by case id.

    Reads a folder of label files (``<case>.nii.gz`` or ``<case>_seg.nii.gz``, e.g. MSD ``labelsTr``), an MSD
    folder (its ``labelsTr``), or a BraTS folder of case folders (``<case>/<case>_seg.nii.gz`` or ``-seg``).

    Raises:
        FileNotFoundError: if the folder does not exist or holds no reference.
    """
    root = Path(ref_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: reference folder does not exist")
    if (root / "labelsTr").is_dir():
        root = root / "labelsTr"
    refs = {_case_key(p.name): str(p) for p in _nifti_in(root)}
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        segs = [p for p in _nifti_in(sub) if strip_nifti_extension(p.name).endswith(_SEG_SUFFIXES)]
        exact = [p for p in segs if _case_key(p.name) == sub.name]
        if exact or len(segs) == 1:
            refs[sub.name] = str((exact or segs)[0])
    if not refs:
        raise FileNotFoundError(f"{root}: no reference label files (<case>.nii.gz, or <case>/<case>_seg.nii.gz)")
    return refs


def evaluate_folders(
    pred_dir: str | os.PathLike,
    ref_dir: str | os.PathLike,
    convention: str = "brats2021",
    ref_convention: str | None = None,
    affine_tolerance: float = AFFINE_TOLERANCE,
) -> EvaluationResult:
    """Evaluate every prediction of ``pred_dir`` against ``ref_dir`` (see :func:`find_references`).

    Cases on one side only are kept, with status ``missing_prediction`` or ``missing_reference``.
    """
    preds, refs = find_predictions(pred_dir), find_references(ref_dir)
    pairs = {c: (preds.get(c), refs.get(c)) for c in set(preds) | set(refs)}
    return evaluate_cases(pairs, convention, ref_convention, affine_tolerance)


def evaluate_items(
    items: Sequence[Mapping[str, Any]],
    pred_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    convention: str = "brats2021",
    ref_convention: str | None = None,
    name_template: str = "{case_id}.nii.gz",
    overwrite: bool = False,
) -> dict[str, Any]:
    """Evaluate the predictions of labelled data list items and write ``metrics.csv`` and ``metrics_summary.json``.

    For the bundle's ``evaluate.yaml``.

    Args:
        items: cases with ``case_id`` and ``label`` (``DatasetSpec.items``).
        pred_dir: folder of the predictions.
        output_dir: where to write the results.
        convention: label convention of the predictions.
        ref_convention: label convention of the labels.
        name_template: prediction file names.
        overwrite: replace existing result files.

    Returns:
        The summary.
    """
    pairs = {}
    for item in items:
        pred = Path(pred_dir) / name_template.format(case_id=item["case_id"])
        pairs[item["case_id"]] = (str(pred) if pred.is_file() else None, item.get("label"))
    result = evaluate_cases(pairs, convention, ref_convention)
    out = Path(output_dir)
    return write_results(result, out / "metrics.csv", out / "metrics_summary.json", overwrite)
