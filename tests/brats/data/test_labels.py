from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.losses import DiceLoss
from monai.transforms import ConvertToMultiChannelBasedOnBratsClasses

from brats_cggm.brats.data.labels import (
    LABEL_CONVENTIONS,
    REGIONS,
    ConvertToLabelsd,
    ConvertToRegionsd,
    check_labels,
    labels_to_regions,
    matching_conventions,
    regions_to_labels,
)

CONVENTIONS = sorted(LABEL_CONVENTIONS)


def _random_labels(convention: str, shape=(1, 8, 9, 10), seed: int = 0) -> np.ndarray:
    values = np.array(LABEL_CONVENTIONS[convention].values, dtype=np.uint8)
    return np.random.default_rng(seed).choice(values, size=shape)


def test_regions_order() -> None:
    assert REGIONS == ("tc", "wt", "et")


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_round_trip_numpy(convention: str) -> None:
    labels = _random_labels(convention)
    regions = labels_to_regions(labels, convention)
    assert isinstance(regions, np.ndarray)
    assert regions.dtype == np.float32 and regions.shape == (3, 8, 9, 10)
    back = regions_to_labels(regions, convention)
    assert back.dtype == np.uint8 and back.shape == labels.shape
    np.testing.assert_array_equal(back, labels)


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_round_trip_torch(convention: str) -> None:
    labels = torch.as_tensor(_random_labels(convention, seed=1))
    regions = labels_to_regions(labels, convention)
    assert isinstance(regions, torch.Tensor) and regions.dtype == torch.float32
    back = regions_to_labels(regions > 0.5, convention)
    assert back.dtype == torch.uint8
    assert torch.equal(back, labels)


@pytest.mark.parametrize(
    ("convention", "tc", "wt", "et"),
    [("brats2021", (1, 4), (1, 2, 4), (4,)), ("brats2023", (1, 3), (1, 2, 3), (3,)), ("msd", (2, 3), (1, 2, 3), (3,))],
)
def test_region_membership(convention: str, tc, wt, et) -> None:
    values = np.array(LABEL_CONVENTIONS[convention].values).reshape(-1, 1, 1)
    regions = labels_to_regions(values, convention)
    for channel, members in zip(regions, (tc, wt, et), strict=True):
        np.testing.assert_array_equal(channel.ravel(), np.isin(values.ravel(), members).astype(np.float32))


def test_matches_monai_for_brats2021() -> None:
    labels = _random_labels("brats2021")
    expected = ConvertToMultiChannelBasedOnBratsClasses(et_label=4)(labels)
    np.testing.assert_array_equal(labels_to_regions(labels, "brats2021"), expected.astype(np.float32))


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_hierarchy(convention: str) -> None:
    conv = LABEL_CONVENTIONS[convention]
    # Voxels: nothing; ET only; TC only; WT only; all three; TC and ET without WT.
    regions = np.array([[0, 0, 1, 0, 1, 1], [0, 0, 0, 1, 1, 0], [0, 1, 0, 0, 1, 1]], dtype=bool).reshape(3, 6, 1, 1)
    out = regions_to_labels(regions, convention)
    assert out.shape == (1, 6, 1, 1)
    expected = [0, conv.enhancing, conv.core, conv.edema, conv.enhancing, conv.enhancing]
    np.testing.assert_array_equal(out.ravel(), expected)


def test_labels_without_channel_and_float_input() -> None:
    labels = _random_labels("brats2021", shape=(6, 6, 6)).astype(np.float32)
    regions = labels_to_regions(labels, "brats2021")
    assert regions.shape == (3, 6, 6, 6)
    np.testing.assert_array_equal(regions_to_labels(regions, "brats2021")[0], labels)


def test_thresholds_probabilities() -> None:
    probs = np.full((3, 2, 2, 2), 0.2, dtype=np.float32)
    probs[1, 0] = 0.9  # WT only -> edema
    out = regions_to_labels(probs, "brats2021")
    assert set(np.unique(out[0, 0]).tolist()) == {2} and set(np.unique(out[0, 1]).tolist()) == {0}


def test_float_output_works_with_squared_dice() -> None:
    labels = torch.as_tensor(_random_labels("brats2023", shape=(1, 6, 6, 6)))
    target = labels_to_regions(labels, "brats2023")[None]
    loss = DiceLoss(squared_pred=True)(target, target)
    assert float(loss) == pytest.approx(0.0, abs=1e-5)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="unknown label convention 'brats2019'"):
        labels_to_regions(np.zeros((4, 4, 4)), "brats2019")
    with pytest.raises(ValueError, match="more than one channel"):
        labels_to_regions(np.zeros((2, 4, 4, 4)), "msd")
    with pytest.raises(ValueError, match="3 channels"):
        regions_to_labels(np.zeros((2, 4, 4, 4)), "msd")


def test_check_labels() -> None:
    check_labels(np.array([0, 1, 2, 4]), "brats2021", "ok.nii.gz")
    check_labels(torch.tensor([0.0, 3.0]), "brats2023", "ok.nii.gz")
    with pytest.raises(ValueError, match=r"/data/case_seg\.nii\.gz.*\[3, 7\].*'brats2021'"):
        check_labels(np.array([0, 1, 3, 7]), "brats2021", "/data/case_seg.nii.gz")
    with pytest.raises(ValueError, match=r"seg\.nii.*\[4\]"):
        check_labels(torch.tensor([[0, 4]]), "msd", "seg.nii")


def test_labels_say_which_convention_they_fit() -> None:
    assert matching_conventions([0.0, 1.0, 2.0]) == ["brats2021", "brats2023", "msd"]
    assert matching_conventions([0, 1, 2, 3]) == ["brats2023", "msd"]
    assert matching_conventions([0, 4]) == ["brats2021"] and matching_conventions([0, 5]) == []
    with pytest.raises(ValueError, match=r"\[3\] .*values \[0, 1, 2, 3\] fit label convention 'brats2023' or 'msd'"):
        check_labels(torch.tensor([0.0, 1.0, 2.0, 3.0]), "brats2021", "seg.nii.gz")
    with pytest.raises(ValueError, match=r"fit no known label convention"):
        check_labels(np.array([0, 5]), "brats2021", "seg.nii.gz")
    with pytest.raises(ValueError, match=r"\.\.\. \(1000 values\)"):  # an image given as labels: a short message
        check_labels(np.arange(1000.0), "brats2021", "t1.nii.gz")


def test_map_transforms_keep_meta() -> None:
    labels = MetaTensor(torch.as_tensor(_random_labels("msd")), meta={"filename_or_obj": "case_seg.nii.gz"})
    data = {"label": labels, "image": torch.zeros(1)}
    out = ConvertToRegionsd(keys="label", convention="msd")(data)
    assert isinstance(out["label"], MetaTensor) and out["label"].dtype == torch.float32
    assert out["label"].shape == (3, 8, 9, 10)
    assert out["label"].meta["filename_or_obj"] == "case_seg.nii.gz"
    assert out["image"] is data["image"] and data["label"] is labels  # input dict left alone

    back = ConvertToLabelsd(keys="label", convention="msd")(out)
    assert isinstance(back["label"], MetaTensor) and back["label"].dtype == torch.uint8
    assert back["label"].meta["filename_or_obj"] == "case_seg.nii.gz"
    assert torch.equal(back["label"].as_tensor(), labels.as_tensor())


def test_map_transforms_missing_keys() -> None:
    with pytest.raises(KeyError):
        ConvertToRegionsd(keys="label", convention="brats2021")({"image": np.zeros(1)})
    out = ConvertToRegionsd(keys="label", convention="brats2021", allow_missing_keys=True)({"image": 1})
    assert out == {"image": 1}
    regions = ConvertToRegionsd(keys="label", convention="brats2021")({"label": _random_labels("brats2021")})
    assert isinstance(regions["label"], np.ndarray) and regions["label"].dtype == np.float32
