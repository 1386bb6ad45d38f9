"""BraTS evaluation: Dice and HD95 against hand-computed values, the empty-mask conventions, folders."""

from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from brats_cggm.brats.metrics.evaluation import (
    HD95_EMPTY_MM,
    ChallengeOptions,
    case_metrics,
    challenge_row,
    detect_label_convention,
    dice,
    evaluate_cases,
    evaluate_folders,
    hd95,
    summarize,
    summary_markdown,
    write_results,
)
from tests.helpers.segmentation_folders import SHAPE, by_hand, save_labels, write_folders

SPACING = (1.0, 1.0, 2.5)


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    """See :func:`tests.helpers.segmentation_folders.write_folders`."""
    return write_folders(tmp_path)


def _mask(*voxels: tuple[int, int, int]) -> np.ndarray:
    mask = np.zeros(SHAPE, bool)
    for v in voxels:
        mask[v] = True
    return mask


def test_dice_by_hand():
    cube = np.zeros(SHAPE, bool)
    cube[2:5, 2:5, 2:5] = True
    shifted = np.zeros(SHAPE, bool)
    shifted[2:5, 2:5, 3:6] = True
    assert dice(cube, shifted) == pytest.approx(2 * 18 / (27 + 27))
    assert dice(cube, cube) == 1.0
    assert dice(cube, ~cube) == 0.0


def test_hd95_by_hand_honours_spacing_and_percentile():
    pred = _mask((0, 0, 0), (0, 0, 4))
    ref = _mask((0, 0, 0))
    # directed distances pred -> ref: [0, 4 voxels]; 95th percentile (linear): 0.95 * 4 voxels; ref -> pred: [0]
    assert hd95(pred, ref) == pytest.approx(0.95 * 4, abs=1e-5)
    assert hd95(pred, ref, SPACING) == pytest.approx(0.95 * 4 * 2.5, abs=1e-5)
    assert hd95(ref, pred, SPACING) == pytest.approx(0.95 * 4 * 2.5, abs=1e-5)
    assert hd95(_mask((1, 2, 3)), _mask((4, 6, 3)), SPACING) == pytest.approx(5.0)  # 3-4-5 in plane
    assert hd95(_mask((1, 2, 3)), _mask((1, 2, 3))) == 0.0


def test_empty_mask_conventions():
    empty, some = np.zeros(SHAPE, bool), _mask((3, 3, 3))
    assert (dice(empty, empty), hd95(empty, empty)) == (1.0, 0.0)
    assert (dice(some, empty), hd95(some, empty)) == (0.0, HD95_EMPTY_MM)
    assert (dice(empty, some), hd95(empty, some)) == (0.0, HD95_EMPTY_MM)
    assert HD95_EMPTY_MM == pytest.approx(373.13)


def test_case_metrics_regions_from_labels():
    pred = np.zeros(SHAPE, np.uint8)
    ref = np.zeros(SHAPE, np.uint8)
    pred[1, 1, 1], ref[1, 1, 1] = 4, 1  # ET predicted where the reference has necrosis
    pred[5, 5, 5] = ref[5, 5, 5] = 2
    m = case_metrics(pred, ref, SPACING)
    assert (m["dice_et"], m["hd95_et"]) == (0.0, HD95_EMPTY_MM)
    assert (m["dice_tc"], m["hd95_tc"]) == (1.0, 0.0)
    assert (m["dice_wt"], m["hd95_wt"]) == (1.0, 0.0)
    # in the prediction's own convention: BraTS 2023 ET is 3; the reference stays BraTS 2021
    pred23 = np.where(pred == 4, 3, pred)
    assert case_metrics(pred23, ref, SPACING, "brats2023", "brats2021") == m


def test_evaluate_folders_by_hand(folders: tuple[Path, Path]):
    result = evaluate_folders(*folders)
    assert [r["case_id"] for r in result.rows] == ["A", "B", "C", "D", "E"]
    assert result.ids("missing_reference") == ["D"] and result.ids("missing_prediction") == ["E"]
    assert not result.complete
    rows = {r["case_id"]: r for r in result.rows}
    for case, expected in by_hand().items():
        assert rows[case]["status"] == "ok"
        for name, value in expected.items():
            assert rows[case][name] == pytest.approx(value, abs=1e-5), (case, name)


def test_msd_references_in_their_own_convention(msd_dataset: Path, tmp_path: Path):
    msd_to_brats = np.array([0, 2, 1, 4], dtype=np.uint8)  # ED 1 -> 2, NET 2 -> 1, ET 3 -> 4
    ref = msd_dataset / "labelsTr" / "BRATS_001.nii.gz"
    image = nib.load(str(ref))
    pred = tmp_path / "pred" / "BRATS_001.nii.gz"
    pred.parent.mkdir()
    nib.save(nib.Nifti1Image(msd_to_brats[np.asarray(image.dataobj).astype(int)], image.affine), str(pred))
    result = evaluate_folders(tmp_path / "pred", msd_dataset, "brats2021", "msd")
    assert result.ids("ok") == ["BRATS_001"]
    assert result.ids("missing_prediction") == ["BRATS_002", "BRATS_003"]
    row = result.rows[0]
    assert [row[f"dice_{r}"] for r in ("et", "tc", "wt")] == [1.0, 1.0, 1.0]


def test_bad_cases_are_reported_not_dropped(tmp_path: Path):
    good = np.zeros(SHAPE, np.uint8)
    good[2, 2, 2] = 2
    save_labels(tmp_path / "ref" / "bad_labels.nii.gz", good)
    save_labels(tmp_path / "pred" / "bad_labels.nii.gz", np.where(good > 0, 3, 0))  # 3 is not a BraTS 2021 label
    save_labels(tmp_path / "ref" / "bad_shape.nii.gz", good)
    save_labels(tmp_path / "pred" / "bad_shape.nii.gz", good[:-1])
    (tmp_path / "pred" / "corrupt.nii.gz").write_bytes(b"garbage")
    save_labels(tmp_path / "ref" / "corrupt.nii.gz", good)
    result = evaluate_folders(tmp_path / "pred", tmp_path / "ref")
    errors = {r["case_id"]: r["error"] for r in result.rows}
    assert result.ids("error") == ["bad_labels", "bad_shape", "corrupt"]
    assert "unexpected label values [3]" in errors["bad_labels"]
    assert "spatial shape (9, 10, 10) differs" in errors["bad_shape"]
    assert errors["corrupt"].startswith(str(tmp_path / "pred" / "corrupt.nii.gz"))


def test_evaluate_cases_missing_sides():
    result = evaluate_cases({"a": (None, "r.nii.gz"), "b": ("p.nii.gz", None)})
    assert result.ids("missing_prediction") == ["a"] and result.ids("missing_reference") == ["b"]


def test_detect_label_convention():
    assert detect_label_convention([0, 1, 2, 3]) == "brats2023"
    assert detect_label_convention([0, 1, 2, 3, 4]) == "brats2023"  # 4 is then the resection cavity
    assert detect_label_convention([0, 2, 4]) == "brats2021"
    assert detect_label_convention([0, 1, 2]) is None and detect_label_convention([0]) is None


def test_challenge_row_writes_infinity_as_373_and_keeps_nan():
    pred = np.zeros(SHAPE, np.uint8)
    ref = np.zeros(SHAPE, np.uint8)
    ref[1, 1, 1] = 2
    ref[5, 5, 5] = 2
    pred[1, 1, 1] = 2
    pred[8, 8, 8] = 2  # WT: one match, one missed, one false-positive lesion
    row = challenge_row(pred, ref, (1.0, 1.0, 1.0), "brats2021")
    assert (row["all_instance_tp_wt"], row["all_instance_fp_wt"], row["all_instance_fn_wt"]) == (1, 1, 1)
    assert row["global_dsc_wt"] == pytest.approx(0.5)
    assert row["lesionwise_penalised_dsc_wt"] == pytest.approx(1 / 3)  # mean(1, 0 missed, 0 false positive)
    assert row["lesionwise_penalised_hd95_wt"] == pytest.approx(2 * 373 / 3)
    assert math.isnan(row["all_instance_prec_et"])  # no ET lesion on either side
    # ET lesions on both sides, none overlapping: the official lesion-wise HD95 is infinite, written 373
    pred[1, 1, 1] = ref[5, 5, 5] = 4
    row = challenge_row(pred, ref, (1.0, 1.0, 1.0), "brats2021", options=ChallengeOptions(hd95="directed"))
    assert row["all_instance_tp_et"] == 0 and row["lesionwise_hd95_mean_et"] == 373.0
    assert row["global_hd95_et"] == 373.0 and row["global_dsc_et"] == 0.0
    with pytest.raises(ValueError, match="hd95 must be"):
        ChallengeOptions(hd95="mean")
    with pytest.raises(ValueError, match="min_lesion_volume_mm3"):
        ChallengeOptions(min_lesion_volume_mm3=-1)


def test_results_json_has_null_for_nan(folders: tuple[Path, Path], tmp_path: Path):
    import json

    result = evaluate_folders(*folders, convention="auto", options=ChallengeOptions())
    summary = write_results(result, tmp_path / "r.csv", tmp_path / "r.json", markdown_path=tmp_path / "r.md")
    text = (tmp_path / "r.json").read_text()
    written = json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in the summary JSON"))
    assert written["metrics"]["all_instance_prec_et"]["n"] == summary["metrics"]["all_instance_prec_et"]["n"] == 2
    legacy = summarize(evaluate_folders(*folders))
    with pytest.raises(ValueError, match="challenge metrics"):
        summary_markdown(legacy)
    pair = {"A": (str(folders[0] / "A.nii.gz"), str(folders[1] / "A" / "A_seg.nii.gz"))}
    assert "'auto' needs the challenge metrics" in evaluate_cases(pair, "auto").rows[0]["error"]
