"""Post-processing rules, their MONAI transforms, and the choice of thresholds on validation cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from brats_cggm.brats.inference.postprocessing import (
    BratsPostprocess,
    BratsPostprocessd,
    choose_postprocessing,
    mean_region_dice,
    postprocess_labels,
    relabel_small_enhancing_tumour,
    remove_small_components,
    remove_small_region_components,
)

# brats2023: 1 necrosis, 2 edema, 3 enhancing


def _case() -> np.ndarray:
    labels = np.zeros((10, 10, 10), np.uint8)
    labels[0:4, 0:4, 0:4] = 2  # 64-voxel tumour: edema ...
    labels[1:3, 1:3, 1:3] = 3  # ... around 8 voxels of enhancing tumour
    labels[8, 8, 8] = 3  # a 1-voxel enhancing island
    labels[6:8, 0:2, 8:10] = 2  # an 8-voxel edema island
    return labels


def test_remove_small_components_in_voxels_and_mm3():
    mask = _case() > 0
    assert remove_small_components(mask, 8).sum() == 64 + 8
    assert remove_small_components(mask, 9).sum() == 64
    # 2 mm^3 voxels: the 8-voxel island is 16 mm^3
    assert remove_small_components(mask, 16, unit="mm3", spacing=(1, 1, 2)).sum() == 64 + 8
    assert remove_small_components(mask, 17, unit="mm3", spacing=(1, 1, 2)).sum() == 64
    with pytest.raises(ValueError, match="unit"):
        remove_small_components(mask, 1, unit="ml")


def test_removed_components_fall_to_the_next_outer_region():
    labels = _case()
    et = remove_small_region_components(labels, "et", 2, "brats2023")
    assert et[8, 8, 8] == 1  # enhancing -> necrosis: still tumour core
    assert (et == 3).sum() == 8
    wt = remove_small_region_components(labels, "wt", 9, "brats2023")
    assert wt[8, 8, 8] == 0 and (wt[6:8, 0:2, 8:10] == 0).all()
    assert (wt[0:4, 0:4, 0:4] == labels[0:4, 0:4, 0:4]).all()
    tc = remove_small_region_components(labels, "tc", 2, "brats2023")
    assert tc[8, 8, 8] == 2  # core -> edema: still whole tumour
    assert labels[8, 8, 8] == 3  # the input is not changed


def test_small_enhancing_tumour_becomes_necrosis():
    labels = _case()  # 9 enhancing voxels in all
    assert (relabel_small_enhancing_tumour(labels, 9, "brats2023") == labels).all()
    small = relabel_small_enhancing_tumour(labels, 10, "brats2023")
    assert (small == 3).sum() == 0 and (small == 1).sum() == 9
    assert (relabel_small_enhancing_tumour(labels, 10, "brats2021") == labels).all()  # 2021: ET is label 4


def test_rules_in_order_and_transforms():
    labels = _case()
    out = postprocess_labels(labels, "brats2023", {"et": 2}, min_enhancing_size=9)
    # the island leaves ET first, so the 8 remaining ET voxels fall below 9 and become necrosis
    assert (out == 3).sum() == 0 and (out == 1).sum() == 9
    image = MetaTensor(torch.from_numpy(labels[None]), affine=torch.diag(torch.tensor([1.0, 1.0, 2.0, 1.0])))
    transformed = BratsPostprocess("brats2023", {"wt": 17}, unit="mm3")(image)
    assert isinstance(transformed, MetaTensor) and transformed.shape == (1, 10, 10, 10)
    assert (transformed.numpy()[0, 6:8, 0:2, 8:10] == 0).all()  # 16 mm^3 with the MetaTensor's spacing
    assert transformed.numpy()[0].sum() == labels[0:4, 0:4, 0:4].sum()
    data = BratsPostprocessd("label", "brats2023", min_enhancing_size=10)({"label": labels[None], "other": 1})
    assert (data["label"][0] == 3).sum() == 0 and data["other"] == 1
    with pytest.raises(ValueError, match="unknown regions"):
        BratsPostprocess("brats2023", {"ed": 3})


def test_choose_postprocessing_keeps_only_rules_that_help():
    # case 1: reference without enhancing tumour, prediction with a small false one;
    # case 2: reference and prediction agree, with small true components that removal would lose.
    ref1 = np.zeros((10, 10, 10), np.uint8)
    ref1[0:4, 0:4, 0:4] = 1
    pred1 = ref1.copy()
    pred1[1, 1, 1] = 3
    ref2 = _case()
    cases = [(pred1, ref1, (1.0, 1.0, 1.0)), (ref2.copy(), ref2, (1.0, 1.0, 1.0))]
    before = np.mean([mean_region_dice(p, r, "brats2023") for p, r, _ in cases])
    choice = choose_postprocessing(cases, "brats2023", component_sizes={"wt": [4, 16]}, enhancing_sizes=[5, 20])
    assert choice.min_component_size == {}  # removing ref2's true islands only hurts
    assert choice.min_enhancing_size == 5.0  # turns case 1's false ET into necrosis; case 2's 9 ET voxels stay
    assert [row["rule"] for row in choice.table] == ["min_component_size[wt]"] * 2 + ["min_enhancing_size"] * 2
    assert choice.table[0]["score_before"] == pytest.approx(before)
    assert all(row["score_after"] < before for row in choice.table[:2])
    assert [row["kept"] for row in choice.table] == [False, False, True, False]
    # case 1 becomes perfect: ET empty on both sides scores 1
    assert choice.table[2]["score_after"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least one"):
        choose_postprocessing([], "brats2023")
