"""Lesion-wise metrics: components, matching, counts and scores on hand-built masks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from brats_cggm.brats.metrics.lesion import (
    case_challenge_metrics,
    connected_lesions,
    match_lesions,
    official_row,
    penalised_lesionwise_scores,
    region_lesion_metrics,
)
from brats_cggm.brats.metrics.surface import OFFICIAL_HD95_MAX_MM, global_metrics


def _empty(shape=(8, 8, 10)) -> np.ndarray:
    return np.zeros(shape, bool)


def test_lesions_are_26_connected():
    mask = _empty()
    mask[1, 1, 1] = mask[2, 2, 2] = True  # touching at a corner only
    mask[5, 5, 5] = True
    _, n = connected_lesions(mask)
    assert n == 2


def test_two_predictions_overlapping_one_reference():
    # ref: 4 x 4 x 6 = 96 voxels; pred A: z in [0, 3), 48 voxels; pred B: z in [4, 6), 32 voxels (gap at z = 3).
    # Dice A = 2 * 48 / 144 = 2/3, Dice B = 2 * 32 / 128 = 1/2: A is matched, B is a false positive.
    ref, pred = _empty(), _empty()
    ref[0:4, 0:4, 0:6] = True
    pred[0:4, 0:4, 0:3] = True
    pred[0:4, 0:4, 4:6] = True
    out = region_lesion_metrics(pred, ref)
    assert (out["tp"], out["fp"], out["fn"]) == (1, 1, 0)
    assert out["prec"] == 0.5 and out["rec"] == 1.0
    assert out["rq"] == pytest.approx(1 / (1 + 0.5))
    assert out["sq_dsc"] == pytest.approx(2 / 3)
    assert out["pq_dsc"] == pytest.approx(2 / 3 * 2 / 3)
    assert out["sq_dsc_std"] == 0.0
    # the matched pair alone: its global metrics with every surface distance
    pair = global_metrics(pred & (np.arange(10) < 3), ref, nsd_tolerance_mm=1.0)
    assert out["sq_hd95"] == pytest.approx(pair["hd95"])
    assert out["sq_nsd"] == pytest.approx(pair["nsd"])
    scores = penalised_lesionwise_scores(out)
    assert scores["dsc"] == pytest.approx((2 / 3 + 0) / 2)
    assert scores["hd95"] == pytest.approx((pair["hd95"] + OFFICIAL_HD95_MAX_MM) / 2)


def test_matching_maximises_total_dice_not_greedy(monkeypatch):
    # ref 1 overlaps pred 1 (Dice 0.8) and pred 2 (Dice 0.6); ref 2 overlaps only pred 1 (Dice 0.7):
    # greedy takes (1, 1) and leaves ref 2 unmatched; the assignment (1, 2) + (2, 1) has total 1.3 > 0.8.
    ref_lesions = np.zeros((1, 1, 1), np.int32)
    pred_lesions = np.zeros((1, 1, 1), np.int32)
    dice = np.array([[0.8, 0.6], [0.7, 0.0]])
    monkeypatch.setattr("brats_cggm.brats.metrics.lesion._pair_dice", lambda *args: dice)
    assert match_lesions(ref_lesions, 2, pred_lesions, 2) == [(1, 2, 0.6), (2, 1, 0.7)]


def test_several_reference_lesions_merging_into_one_prediction():
    # two 2 x 2 x 2 reference cubes, one 2 x 2 x 6 predicted bar over both: Dice 16 / 32 = 0.5 with each;
    # one of them is matched, the other is a false negative.
    ref, pred = _empty(), _empty()
    ref[0:2, 0:2, 0:2] = ref[0:2, 0:2, 4:6] = True
    pred[0:2, 0:2, 0:6] = True
    out = region_lesion_metrics(pred, ref)
    assert (out["n_ref_instances"], out["n_pred_instances"]) == (2, 1)
    assert (out["tp"], out["fp"], out["fn"]) == (1, 0, 1)
    assert out["sq_dsc"] == pytest.approx(0.5)
    assert out["rq"] == pytest.approx(1 / 1.5)
    assert [lesion["is_matched"] for lesion in out["reference_lesions"]] == [True, False]
    assert [lesion["voxel_count"] for lesion in out["reference_lesions"]] == [8, 8]


def test_no_lesion_on_one_side():
    lesion = _empty()
    lesion[2:4, 2:4, 2:4] = True
    missed = region_lesion_metrics(_empty(), lesion, spacing=(1.0, 1.0, 2.0))
    assert (missed["tp"], missed["fp"], missed["fn"]) == (0, 0, 1)
    assert math.isnan(missed["prec"]) and missed["rec"] == 0.0
    assert (missed["rq"], missed["sq_dsc"], missed["sq_nsd"], missed["pq_dsc"]) == (0.0, 0.0, 0.0, 0.0)
    assert missed["sq_hd95"] == math.inf
    assert missed["reference_lesions"] == [{"voxel_count": 8, "volume": 16.0, "is_matched": False}]
    assert penalised_lesionwise_scores(missed)["hd95"] == OFFICIAL_HD95_MAX_MM
    spurious = region_lesion_metrics(lesion, _empty())
    assert (spurious["tp"], spurious["fp"], spurious["fn"]) == (0, 1, 0)
    assert spurious["prec"] == 0.0 and math.isnan(spurious["rec"])
    # no reference lesion: the official parser reports NaN even with false positives
    assert math.isnan(penalised_lesionwise_scores(spurious)["dsc"])
    both = region_lesion_metrics(_empty(), _empty())
    assert all(math.isnan(both[k]) for k in ("rq", "sq_dsc", "sq_hd95", "sq_nsd", "pq_dsc"))


def test_volume_threshold_of_penalised_scores():
    ref, pred = _empty(), _empty()
    ref[0:4, 0:4, 0:4] = True  # 64 voxels, matched exactly
    ref[6, 6, 8] = True  # 1 voxel, missed
    pred[0:4, 0:4, 0:4] = True
    out = region_lesion_metrics(pred, ref)
    assert penalised_lesionwise_scores(out)["dsc"] == pytest.approx(0.5)
    assert penalised_lesionwise_scores(out, min_lesion_volume_mm3=20)["dsc"] == pytest.approx(1.0)


def test_lesion_touching_the_border_and_crop_equivalence():
    rng = np.random.default_rng(3)
    shape = (20, 18, 12)
    ref = ndimage.binary_dilation(rng.random(shape) > 0.99, iterations=2)
    pred = ndimage.binary_dilation(ref, iterations=1) & (rng.random(shape) > 0.1)
    ref[0, 0:3, 0:3] = pred[0, 0:4, 0:3] = True
    spacing = (1.0, 1.4, 2.0)
    out = region_lesion_metrics(pred, ref, spacing)
    ref_lesions, n_ref = connected_lesions(ref)
    pred_lesions, n_pred = connected_lesions(pred)
    whole = [
        global_metrics(pred_lesions == p, ref_lesions == r, spacing, nsd_tolerance_mm=1.0)
        for r, p, _ in match_lesions(ref_lesions, n_ref, pred_lesions, n_pred)
    ]
    assert out["tp"] == len(whole) > 1
    assert out["sq_hd95"] == pytest.approx(np.mean([w["hd95"] for w in whole]))
    assert out["sq_nsd"] == pytest.approx(np.mean([w["nsd"] for w in whole]))
    assert out["sq_dsc"] == pytest.approx(np.mean([w["dsc"] for w in whole]))


def test_case_regions_of_both_conventions_and_official_columns():
    labels = np.zeros((6, 6, 6), np.uint8)
    labels[1:3, 1:3, 1:3] = 3
    labels[3:5, 3:5, 3:5] = 4  # resection cavity in 2023 labels: not part of wt
    out = case_challenge_metrics(labels, labels, convention="brats2023")
    assert list(out) == ["et", "tc", "wt", "netc", "snfh", "rc"]
    assert out["wt"]["n_ref_instances"] == 1 and out["rc"]["n_ref_instances"] == 1
    assert out["et"]["global_bin_dsc"] == 1.0 and out["et"]["sq_dsc"] == 1.0
    old = np.where(labels == 3, 4, 0).astype(np.uint8)
    out21 = case_challenge_metrics(old, old, convention="brats2021")
    assert list(out21) == ["et", "tc", "wt", "netc", "snfh"]
    assert out21["et"]["n_ref_instances"] == 1
    row = official_row(out)
    assert row["lesionwise_dsc_mean_et"] == 1.0 and row["global_hd95_wt"] == 0.0
    assert row["all_instance_f1_rc"] == 1.0
    assert len(row) == 6 * 15
    with pytest.raises(ValueError, match="rc"):
        case_challenge_metrics(old, old, convention="brats2021", regions=("rc",))


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="shape"):
        region_lesion_metrics(_empty(), _empty((8, 8, 9)))
    with pytest.raises(ValueError, match="spacing"):
        region_lesion_metrics(_empty(), _empty(), spacing=(1.0, -1.0, 1.0))
    with pytest.raises(ValueError, match="hd95"):
        region_lesion_metrics(_empty(), _empty(), hd95="max")
