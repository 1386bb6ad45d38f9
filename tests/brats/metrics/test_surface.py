"""Global Dice, HD95 and NSD: hand-computed values, edge cases, and the bounding-box crop against the whole volume."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from brats_cggm.brats.metrics.case_scores import hd95 as monai_hd95
from brats_cggm.brats.metrics.surface import (
    OFFICIAL_HD95_MAX_MM,
    global_metrics,
    hd95_from_distances,
    surface_distances,
)


def _line(start: int, stop: int, length: int = 20) -> np.ndarray:
    # a (1, 1, N) volume: every voxel of a segment is a surface voxel, distances are differences of z
    mask = np.zeros((1, 1, length), bool)
    mask[0, 0, start:stop] = True
    return mask


def _whole_volume_distances(pred, ref, spacing):
    # the definition, on the whole volume (no crop)
    cross = ndimage.generate_binary_structure(3, 1)
    ps = pred & ~ndimage.binary_erosion(pred, cross)
    rs = ref & ~ndimage.binary_erosion(ref, cross)
    return (
        ndimage.distance_transform_edt(~ps, sampling=spacing)[rs],
        ndimage.distance_transform_edt(~rs, sampling=spacing)[ps],
    )


def test_pooled_and_directed_hd95_differ_by_hand():
    # ref z in [0, 10), pred z in [0, 12): ref->pred all 0 (10 values); pred->ref 0 x10, 1, 2.
    # pooled: 22 values, position 0.95 * 21 = 19.95 between 0 and 1 -> 0.95;
    # directed: pred->ref, position 0.95 * 11 = 10.45 between 1 and 2 -> 1.45.
    pred, ref = _line(0, 12), _line(0, 10)
    out = global_metrics(pred, ref, nsd_tolerance_mm=1.0)
    assert out["dsc"] == pytest.approx(20 / 22)
    assert out["hd95"] == pytest.approx(0.95)
    assert global_metrics(pred, ref, hd95="directed")["hd95"] == pytest.approx(1.45)
    # NSD: (fraction of ref surface within tau + fraction of pred surface within tau) / 2
    assert out["nsd"] == pytest.approx((1 + 11 / 12) / 2)
    assert global_metrics(pred, ref, nsd_tolerance_mm=0.5)["nsd"] == pytest.approx((1 + 10 / 12) / 2)


def test_anisotropic_spacing_scales_the_distances():
    pred, ref = _line(0, 12), _line(0, 10)
    out = global_metrics(pred, ref, spacing=(1.0, 1.0, 2.0), nsd_tolerance_mm=1.0)
    assert out["hd95"] == pytest.approx(1.9)
    assert global_metrics(pred, ref, (1.0, 1.0, 2.0), hd95="directed")["hd95"] == pytest.approx(2.9)
    # at 2 mm per voxel the voxel one step away is outside a 1 mm tolerance, inside a 2 mm one
    assert out["nsd"] == pytest.approx((1 + 10 / 12) / 2)
    assert global_metrics(pred, ref, (1.0, 1.0, 2.0), 2.0)["nsd"] == pytest.approx((1 + 11 / 12) / 2)


@pytest.mark.parametrize(
    ("pred_slice", "ref_slice", "expected"),
    [
        (None, None, {"dsc": 1.0, "hd95": 0.0, "nsd": 1.0}),
        ((2, 5), None, {"dsc": 0.0, "hd95": OFFICIAL_HD95_MAX_MM, "nsd": 0.0}),
        (None, (2, 5), {"dsc": 0.0, "hd95": OFFICIAL_HD95_MAX_MM, "nsd": 0.0}),
        # disjoint but close: the official evaluator does not compute distances without overlap
        ((2, 5), (6, 9), {"dsc": 0.0, "hd95": OFFICIAL_HD95_MAX_MM, "nsd": 0.0}),
    ],
)
def test_edge_cases(pred_slice, ref_slice, expected):
    pred = _line(*pred_slice) if pred_slice else _line(0, 0)
    ref = _line(*ref_slice) if ref_slice else _line(0, 0)
    assert global_metrics(pred, ref) == expected
    assert global_metrics(pred, ref, hd95_max_mm=373.13)["hd95"] == (373.13 if expected["dsc"] == 0 else 0.0)


def test_crop_equals_whole_volume_with_lesions_touching_the_border():
    rng = np.random.default_rng(0)
    for trial in range(6):
        shape = (30, 25, 20)
        pred = ndimage.binary_dilation(rng.random(shape) > 0.995, iterations=2)
        ref = ndimage.binary_dilation(rng.random(shape) > 0.995, iterations=2)
        pred[0, :5, :5] = ref[-1, -3:, :] = True  # on the volume's faces
        spacing = (1.0, 1.3, 2.2) if trial % 2 else (1.0, 1.0, 1.0)
        cropped = surface_distances(pred, ref, spacing)
        whole = _whole_volume_distances(pred, ref, spacing)
        for a, b in zip(cropped, whole):
            np.testing.assert_allclose(np.sort(a), np.sort(b))


def test_directed_hd95_is_monais():
    rng = np.random.default_rng(1)
    shape = (24, 24, 16)
    pred = ndimage.binary_dilation(rng.random(shape) > 0.99, iterations=2)
    ref = ndimage.binary_dilation(rng.random(shape) > 0.99, iterations=2)
    pred |= ref & (rng.random(shape) > 0.5)  # overlap, so the official rule computes the distances
    spacing = (1.0, 1.5, 2.0)
    ours = hd95_from_distances(*surface_distances(pred, ref, spacing), mode="directed")
    assert ours == pytest.approx(monai_hd95(pred, ref, spacing), rel=1e-5)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="shape"):
        global_metrics(np.zeros((2, 2, 2)), np.zeros((2, 2, 3)))
    with pytest.raises(ValueError, match="spacing"):
        global_metrics(np.zeros((2, 2, 2)), np.zeros((2, 2, 2)), spacing=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="hd95"):
        global_metrics(np.zeros((2, 2, 2)), np.zeros((2, 2, 2)), hd95="mean")
