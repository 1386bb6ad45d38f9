"""One case's metrics: Dice and HD95 against hand-computed values, the empty-mask conventions, the challenge row."""

from __future__ import annotations

import math

import numpy as np
import pytest

from brats_cggm.brats.metrics.case_scores import (
    HD95_EMPTY_MM,
    ChallengeOptions,
    case_metrics,
    challenge_row,
    detect_label_convention,
    dice,
    hd95,
)
from tests.helpers.segmentation_folders import SHAPE

SPACING = (1.0, 1.0, 2.5)


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
