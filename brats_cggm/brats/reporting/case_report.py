"""A case's report: what a reader of a segmentation wants to know about it, computed from arrays (no file written).

The report adds to the JSON record that ``brats-cggm-infer`` writes beside each segmentation
(:func:`~brats_cggm.brats.inference.case_io.case_record`) the keys of :func:`case_report`: the volume of each
region, its connected lesions, the input grid, the model, and quality flags. The keys and their types are
``case_report.schema.json`` in this package (:data:`SCHEMA_FILE`); ``docs/inference.md`` documents them.

Quality flags (:data:`FLAG_NAMES`) and their thresholds:

- ``empty_prediction``: no voxel carries a tumour label.
- ``tumour_at_border``: a tumour voxel lies in the outermost :data:`BORDER_VOXELS` voxel layer of the volume: the
  tumour may continue outside the field of view.
- ``implausible_volume``: the whole tumour (WT) is larger than :data:`WT_MAX_ML` mL (a third of an adult brain of
  about 1200 mL) or, when not empty, smaller than :data:`WT_MIN_ML` mL (a speck, not a tumour).
- ``intensity_outliers``: in an input sequence, a value lies farther than :data:`OUTLIER_SPREAD` times the
  1st-99th percentile range of its nonzero voxels beyond that range (spikes, wrong scaling, corrupt voxels).
- ``non_brain_field_of_view``: the physical extent of an axis (voxels times spacing) is below
  :data:`FOV_MIN_MM` mm (too small to hold a whole head) or above :data:`FOV_MAX_MM` mm (a body, not a head).
- ``missing_sequences``: the case lacked a sequence (the mode that stood in for it is named).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage

from brats_cggm.brats.data.labels import LabelConvention, get_label_convention
from brats_cggm.brats.metrics.challenge_regions import challenge_region_labels

__all__ = [
    "BORDER_VOXELS",
    "CONNECTIVITY",
    "FLAG_NAMES",
    "FOV_MAX_MM",
    "FOV_MIN_MM",
    "OUTLIER_SPREAD",
    "REPORT_VERSION",
    "SCHEMA_FILE",
    "WT_MAX_ML",
    "WT_MIN_ML",
    "case_report",
    "input_grid",
    "intensity_summary",
    "quality_flags",
    "region_statistics",
    "report_regions",
]

#: Version of the report's keys (``report_version``); raised when a key changes meaning or goes.
REPORT_VERSION = 1

#: The JSON Schema of a report record, shipped with the package.
SCHEMA_FILE = Path(__file__).with_name("case_report.schema.json")

#: Lesions are connected components under 26-connectivity (faces, edges and corners), as the post-processing
#: rules count them (:mod:`brats_cggm.brats.inference.postprocessing`).
CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)

#: Voxel layers at the volume's faces in which a tumour voxel raises ``tumour_at_border``.
BORDER_VOXELS = 1

#: Whole-tumour volumes (mL) above which, or (when not empty) below which, ``implausible_volume`` is raised.
WT_MAX_ML = 400.0
WT_MIN_ML = 0.1

#: Physical extent (mm) of an axis below or above which ``non_brain_field_of_view`` is raised.
FOV_MIN_MM = 100.0
FOV_MAX_MM = 400.0

#: ``intensity_outliers`` is raised for a value beyond the 1st-99th percentile range of a sequence's nonzero
#: voxels by more than this many times that range.
OUTLIER_SPREAD = 10.0

#: Every flag a report may raise, in the order they are checked.
FLAG_NAMES: tuple[str, ...] = (
    "empty_prediction",
    "tumour_at_border",
    "implausible_volume",
    "intensity_outliers",
    "non_brain_field_of_view",
    "missing_sequences",
)

# Percentiles are estimated on every n-th nonzero voxel: a 240x240x155 volume holds millions.
_PERCENTILE_SAMPLES = 200_000


def report_regions(convention: str | LabelConvention) -> tuple[str, ...]:
    """The regions a report lists for a label convention, upper case.

    Args:
        convention: a key of :data:`~brats_cggm.brats.data.labels.LABEL_CONVENTIONS` or a convention.

    Returns:
        ``("ET", "TC", "WT")``; for ``brats2023`` also ``"NETC"``, ``"SNFH"`` and ``"RC"`` (its labels name them).
    """
    conv = get_label_convention(convention)
    regions = challenge_region_labels(conv)
    names = tuple(regions) if conv.name == "brats2023" else ("et", "tc", "wt")
    return tuple(n.upper() for n in names)


def region_statistics(
    labels: np.ndarray, convention: str | LabelConvention, voxel_volume_mm3: float
) -> dict[str, dict[str, Any]]:
    """Volume, lesion count and largest lesion of each region of :func:`report_regions`.

    Args:
        labels: ``(X, Y, Z)`` integer label map.
        convention: its label convention.
        voxel_volume_mm3: the volume of one voxel (the product of the spacing).

    Returns:
        Region name to ``{"volume_ml": voxels x voxel volume / 1000, "lesions": connected components (see
        :data:`CONNECTIVITY`), "largest_lesion_ml": the largest component's volume, 0 when none}``.
    """
    labels = np.asarray(labels)
    region_labels = challenge_region_labels(convention)
    out: dict[str, dict[str, Any]] = {}
    for name in report_regions(convention):
        mask = np.isin(labels, region_labels[name.lower()])
        components, count = ndimage.label(mask, structure=CONNECTIVITY)
        largest = int(np.bincount(components.ravel())[1:].max()) if count else 0
        out[name] = {
            "volume_ml": float(mask.sum()) * voxel_volume_mm3 / 1000.0,
            "lesions": int(count),
            "largest_lesion_ml": largest * voxel_volume_mm3 / 1000.0,
        }
    return out


def input_grid(
    affine: np.ndarray,
    shape: Sequence[int],
    spacing: Sequence[float],
    model_spacing: Sequence[float] | None = None,
    model_orientation: str | None = None,
) -> dict[str, Any]:
    """The input's voxel grid, and whether the network saw it resampled.

    Args:
        affine: the input's voxel-to-world affine.
        shape: its spatial shape.
        spacing: its voxel size (mm), from the header.
        model_spacing: the spacing the preprocessing resamples to (its ``pixdim``); None when it does not resample.
        model_orientation: the orientation the preprocessing brings cases to (its ``axcodes``), if known.

    Returns:
        ``shape``, ``spacing_mm``, ``orientation`` (axis codes such as ``"RAS"``), ``extent_mm`` (shape times
        spacing), ``model_spacing_mm`` (or None), ``resampled`` (the spacings differ by more than 0.001 mm) and
        ``model_orientation`` (or None).
    """
    spacing = [float(s) for s in spacing[:3]]
    shape = [int(s) for s in shape[:3]]
    resampled = model_spacing is not None and not np.allclose(spacing, [float(s) for s in model_spacing], atol=1e-3)
    return {
        "shape": shape,
        "spacing_mm": spacing,
        "orientation": "".join(nib.aff2axcodes(np.asarray(affine))),
        "extent_mm": [n * s for n, s in zip(shape, spacing, strict=True)],
        "model_spacing_mm": None if model_spacing is None else [float(s) for s in model_spacing],
        "resampled": bool(resampled),
        "model_orientation": model_orientation,
    }


def intensity_summary(volume: np.ndarray) -> dict[str, float]:
    """Robust range and extremes of a sequence's nonzero voxels, for ``intensity_outliers``.

    Args:
        volume: the sequence, any shape.

    Returns:
        ``p1`` and ``p99`` (percentiles of the nonzero voxels, estimated on at most 200 000 of them taken at a
        regular stride), ``min`` and ``max`` (over every voxel); all 0 for an all-zero volume.
    """
    values = np.asarray(volume).ravel()
    nonzero = values[values != 0]
    if nonzero.size == 0:
        return {"p1": 0.0, "p99": 0.0, "min": 0.0, "max": 0.0}
    sample = nonzero[:: max(1, nonzero.size // _PERCENTILE_SAMPLES)].astype(np.float64)
    p1, p99 = np.percentile(sample, [1.0, 99.0])
    return {"p1": float(p1), "p99": float(p99), "min": float(values.min()), "max": float(values.max())}


def _outlier(summary: Mapping[str, float]) -> str | None:
    spread = OUTLIER_SPREAD * max(summary["p99"] - summary["p1"], 0.0)
    if summary["max"] > summary["p99"] + spread:
        return f"maximum {summary['max']:.4g} far above its 99th percentile {summary['p99']:.4g}"
    if summary["min"] < summary["p1"] - spread:
        return f"minimum {summary['min']:.4g} far below its 1st percentile {summary['p1']:.4g}"
    return None


def _border_faces(tumour: np.ndarray) -> list[str]:
    faces = []
    width = BORDER_VOXELS
    for axis in range(3):
        for side, index in (("-", slice(0, width)), ("+", slice(-width, None))):
            cut: list[Any] = [slice(None)] * 3
            cut[axis] = index
            if tumour[tuple(cut)].any():
                faces.append(f"axis {axis}{side}")
    return faces


def quality_flags(
    labels: np.ndarray,
    regions: Mapping[str, Mapping[str, Any]],
    grid: Mapping[str, Any],
    intensities: Mapping[str, Mapping[str, float]] | None = None,
    missing: Sequence[str] = (),
    missing_modality: str = "error",
) -> list[dict[str, str]]:
    """The quality flags of a case (see the module's documentation for each and its threshold).

    Args:
        labels: ``(X, Y, Z)`` integer label map (0 background).
        regions: its :func:`region_statistics`.
        grid: its :func:`input_grid`.
        intensities: :func:`intensity_summary` of each input sequence, by name.
        missing: the sequences the case lacked.
        missing_modality: the mode that stood in for them.

    Returns:
        ``{"name", "message"}`` for each flag raised, in :data:`FLAG_NAMES` order; empty when none is.
    """
    flags: list[dict[str, str]] = []
    tumour = np.asarray(labels) > 0
    if not tumour.any():
        flags.append({"name": "empty_prediction", "message": "no voxel is labelled tumour"})
    else:
        faces = _border_faces(tumour)
        if faces:
            flags.append(
                {
                    "name": "tumour_at_border",
                    "message": f"tumour within {BORDER_VOXELS} voxel of the volume's faces ({', '.join(faces)}): it "
                    "may continue outside the field of view",
                }
            )
    wt = float(regions.get("WT", {}).get("volume_ml", 0.0))
    if wt > WT_MAX_ML or 0.0 < wt < WT_MIN_ML:
        flags.append(
            {
                "name": "implausible_volume",
                "message": f"whole tumour {wt:.3g} mL, outside the plausible {WT_MIN_ML:g}-{WT_MAX_ML:g} mL",
            }
        )
    outliers = [f"{name}: {why}" for name, s in (intensities or {}).items() if (why := _outlier(s)) is not None]
    if outliers:
        flags.append({"name": "intensity_outliers", "message": "; ".join(outliers)})
    extent = [float(e) for e in grid["extent_mm"]]
    if any(e < FOV_MIN_MM or e > FOV_MAX_MM for e in extent):
        shown = " x ".join(f"{e:.0f}" for e in extent)
        flags.append(
            {
                "name": "non_brain_field_of_view",
                "message": f"field of view {shown} mm, outside the {FOV_MIN_MM:g}-{FOV_MAX_MM:g} mm of a head per axis",
            }
        )
    if missing:
        flags.append(
            {
                "name": "missing_sequences",
                "message": f"no {', '.join(missing)} (missing_modality {missing_modality})",
            }
        )
    return flags


def case_report(
    labels: np.ndarray,
    convention: str | LabelConvention,
    grid: Mapping[str, Any],
    intensities: Mapping[str, Mapping[str, float]] | None = None,
    missing: Iterable[str] = (),
    missing_modality: str = "error",
    model: Mapping[str, Any] | None = None,
    overlay: str | None = None,
) -> dict[str, Any]:
    """The report keys added to a case's JSON record.

    Args:
        labels: the segmentation, ``(X, Y, Z)`` integer labels in the input's grid (after post-processing).
        convention: its label convention.
        grid: the input's :func:`input_grid` (its spacing gives the voxel volume).
        intensities: :func:`intensity_summary` of each input sequence, by name.
        missing: the sequences the case lacked.
        missing_modality: the mode that stood in for them.
        model: what made the segmentation (``bundle``, ``weights``, ``weights_sha256``, ``config``,
            ``postprocessing``), the record's ``model_details`` (its ``model`` is where the settings were read).
        overlay: the file name of the case's overlay picture, or None when none was written.

    Returns:
        ``report_version``, ``label_convention``, ``regions`` (see :func:`region_statistics`), ``grid``,
        ``intensities``, ``model_details``, ``flags`` (see :func:`quality_flags`) and ``overlay``.
    """
    conv = get_label_convention(convention)
    voxel_volume = math.prod(float(s) for s in grid["spacing_mm"])
    regions = region_statistics(labels, conv, voxel_volume)
    missing = list(missing)
    return {
        "report_version": REPORT_VERSION,
        "label_convention": conv.name,
        "regions": regions,
        "grid": dict(grid),
        "intensities": {k: dict(v) for k, v in (intensities or {}).items()},
        "model_details": dict(model or {}),
        "flags": quality_flags(labels, regions, grid, intensities, missing, missing_modality),
        "overlay": overlay,
    }
