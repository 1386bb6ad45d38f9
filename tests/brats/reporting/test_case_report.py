"""The numbers and flags of a case report (``brats_cggm.brats.reporting.case_report``), and its JSON Schema."""

from __future__ import annotations

import json

import numpy as np
import pytest

from brats_cggm.brats.inference.case_io import case_record
from brats_cggm.brats.reporting.case_report import (
    FLAG_NAMES,
    FOV_MAX_MM,
    SCHEMA_FILE,
    WT_MAX_ML,
    WT_MIN_ML,
    case_report,
    input_grid,
    intensity_summary,
    quality_flags,
    region_statistics,
    report_regions,
)

SPACING = (1.5, 2.0, 2.5)  # 7.5 mm3 a voxel
SHAPE = (90, 80, 70)  # 135 x 160 x 175 mm: a head's field of view


def _grid(shape=SHAPE, spacing=SPACING, model_spacing=(1.0, 1.0, 1.0)) -> dict:
    return input_grid(np.diag([*spacing, 1.0]), shape, spacing, model_spacing, "RAS")


def _two_blobs() -> np.ndarray:
    """Two separate lesions inside the volume: a 4x4x4 one of core, ET and edema, and a 2x2x2 edema one."""
    labels = np.zeros(SHAPE, np.uint8)
    labels[10:14, 10:14, 10:14] = 2  # 64 voxels of edema ...
    labels[11:13, 11:13, 11:13] = 1  # ... around 8 of necrosis,
    labels[11:12, 11:12, 11:12] = 4  # one of them enhancing
    labels[40:42, 40:42, 40:42] = 2  # 8 voxels, apart
    return labels


def test_volumes_in_ml_are_voxel_counts_times_the_voxel_volume_on_a_non_1_mm_grid():
    regions = region_statistics(_two_blobs(), "brats2021", 1.5 * 2.0 * 2.5)
    assert list(regions) == ["ET", "TC", "WT"]
    assert regions["ET"]["volume_ml"] == pytest.approx(1 * 7.5 / 1000)
    assert regions["TC"]["volume_ml"] == pytest.approx(8 * 7.5 / 1000)
    assert regions["WT"]["volume_ml"] == pytest.approx(72 * 7.5 / 1000)


def test_lesions_are_counted_and_the_largest_measured():
    regions = region_statistics(_two_blobs(), "brats2021", 7.5)
    assert regions["WT"]["lesions"] == 2 and regions["TC"]["lesions"] == 1 and regions["ET"]["lesions"] == 1
    assert regions["WT"]["largest_lesion_ml"] == pytest.approx(64 * 7.5 / 1000)
    assert regions["TC"]["largest_lesion_ml"] == pytest.approx(8 * 7.5 / 1000)
    diagonal = np.zeros((5, 5, 5), np.uint8)
    diagonal[1, 1, 1] = diagonal[2, 2, 2] = 2  # touching at a corner: one lesion (26-connectivity)
    assert region_statistics(diagonal, "brats2021", 1.0)["WT"]["lesions"] == 1


def test_an_empty_region_has_no_lesion():
    regions = region_statistics(np.zeros((4, 4, 4), np.uint8), "brats2021", 1.0)
    assert regions["WT"] == {"volume_ml": 0.0, "lesions": 0, "largest_lesion_ml": 0.0}


def test_brats2023_labels_report_the_challenge_regions():
    assert report_regions("brats2021") == report_regions("msd") == ("ET", "TC", "WT")
    assert report_regions("brats2023") == ("ET", "TC", "WT", "NETC", "SNFH", "RC")
    labels = np.zeros((6, 6, 6), np.uint8)
    labels[1, 1, 1], labels[1, 1, 2], labels[4, 4, 4], labels[3, 1, 1] = 1, 3, 4, 2
    regions = region_statistics(labels, "brats2023", 1000.0)  # 1 mL a voxel
    assert {n: r["volume_ml"] for n, r in regions.items()} == {
        "ET": 1.0,
        "TC": 2.0,
        "WT": 3.0,
        "NETC": 1.0,
        "SNFH": 1.0,
        "RC": 1.0,
    }


def test_grid_and_resampling():
    grid = _grid()
    assert grid["shape"] == list(SHAPE) and grid["spacing_mm"] == list(SPACING) and grid["orientation"] == "RAS"
    assert grid["extent_mm"] == [135.0, 160.0, 175.0] and grid["resampled"] is True
    assert _grid(spacing=(1.0, 1.0, 1.0))["resampled"] is False
    assert input_grid(np.diag([-1.0, -1.0, 1.0, 1.0]), SHAPE, (1, 1, 1))["orientation"] == "LPS"
    assert input_grid(np.eye(4), SHAPE, (1, 1, 1), None)["resampled"] is False


def _names(flags) -> list[str]:
    return [f["name"] for f in flags]


def test_border_flag_fires_for_tumour_on_a_face_only():
    labels = _two_blobs()
    regions = region_statistics(labels, "brats2021", 7.5)
    assert quality_flags(labels, regions, _grid()) == []
    labels[-1, 30:32, 30:32] = 2  # on the last slice of axis 0
    flags = quality_flags(labels, region_statistics(labels, "brats2021", 7.5), _grid())
    assert _names(flags) == ["tumour_at_border"] and "axis 0+" in flags[0]["message"]
    labels[-1] = 0
    labels[1, 30, 30] = 2  # one voxel in from the face: not at the border
    assert quality_flags(labels, region_statistics(labels, "brats2021", 7.5), _grid()) == []


def test_empty_and_implausible_volumes():
    empty = np.zeros(SHAPE, np.uint8)
    flags = quality_flags(empty, region_statistics(empty, "brats2021", 7.5), _grid())
    assert _names(flags) == ["empty_prediction"]
    assert _names(quality_flags(_two_blobs(), {"WT": {"volume_ml": WT_MAX_ML + 1}}, _grid())) == ["implausible_volume"]
    assert _names(quality_flags(_two_blobs(), {"WT": {"volume_ml": WT_MIN_ML / 2}}, _grid())) == ["implausible_volume"]
    assert quality_flags(_two_blobs(), {"WT": {"volume_ml": WT_MAX_ML - 1}}, _grid()) == []


def test_field_of_view_intensity_and_missing_sequence_flags():
    labels = np.zeros((20, 20, 20), np.uint8)
    labels[5:8, 5:8, 5:8] = 2
    regions = region_statistics(labels, "brats2021", 1000.0)  # 27 mL
    small = input_grid(np.eye(4), labels.shape, (1, 1, 1))  # 20 mm: not a head
    assert _names(quality_flags(labels, regions, small)) == ["non_brain_field_of_view"]
    large = input_grid(np.eye(4), labels.shape, (FOV_MAX_MM / 10, 10, 10))
    assert _names(quality_flags(labels, regions, large)) == ["non_brain_field_of_view"]
    head = input_grid(np.eye(4), labels.shape, (10, 10, 10))
    volume = np.random.default_rng(0).normal(100.0, 10.0, (30, 30, 30))
    assert quality_flags(labels, regions, head, {"flair": intensity_summary(volume)}) == []
    volume[3, 3, 3] = 1e6  # a spike
    flags = quality_flags(labels, regions, head, {"flair": intensity_summary(volume)}, ["t1ce"], "drop")
    assert _names(flags) == ["intensity_outliers", "missing_sequences"]
    assert flags[0]["message"].startswith("flair: maximum") and "t1ce" in flags[1]["message"]
    assert set(_names(flags)) <= set(FLAG_NAMES)


def test_intensity_summary_ignores_the_background():
    volume = np.zeros((10, 10, 10))
    volume[2:8, 2:8, 2:8] = 50.0
    assert intensity_summary(volume) == {"p1": 50.0, "p99": 50.0, "min": 0.0, "max": 50.0}
    assert intensity_summary(np.zeros(3)) == {"p1": 0.0, "p99": 0.0, "min": 0.0, "max": 0.0}


def test_a_record_with_its_report_validates_against_the_schema():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    record = case_record("P01", "out/P01.nii.gz", ["flair", "t1ce", "t1", "t2"], [1], "drop", ["a.nii.gz"], "cfg")
    labels = _two_blobs()
    labels[0, 0, 0] = 2
    model = {
        "bundle": "b",
        "weights": "b/models/model.pt",
        "weights_sha256": "0" * 64,
        "config": "c",
        "postprocessing": None,
    }
    report = case_report(
        labels, "brats2023", _grid(), {"flair": intensity_summary(labels)}, ["t1ce"], "drop", model, "P01.png"
    )
    full = json.loads(json.dumps({**record, **report}))  # as written and read back
    jsonschema.validate(full, schema)
    assert full["report_version"] == 1 and full["overlay"] == "P01.png"
    assert _names(full["flags"]) == ["tumour_at_border", "missing_sequences"]
    assert set(full["regions"]) == {"ET", "TC", "WT", "NETC", "SNFH", "RC"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**full, "flags": [{"name": "unknown", "message": "x"}]}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**full, "regions": {"WT": {"volume_ml": 1.0}}}, schema)
