"""Post-processing rules of an inference config: reading (errors name the config), writing back, applying."""

from __future__ import annotations

import numpy as np
import pytest

from brats_cggm.brats.inference.postprocessing_rules import PostprocessingRules


def test_round_trip_and_apply():
    entry = {"min_component_size": {"et": 2, "wt": 5.0}, "min_enhancing_size": None, "unit": "voxels"}
    rules = PostprocessingRules.from_config(entry, "run/configs/inference.json")
    assert rules.to_config() == {
        "min_component_size": {"wt": 5.0, "et": 2.0},
        "min_enhancing_size": None,
        "unit": "voxels",
    }
    assert rules.active and not PostprocessingRules.from_config({}, "x").active
    labels = np.zeros((8, 8, 8), np.uint8)
    labels[1:3, 1:3, 1:3] = 2  # WT component of 8 voxels: kept
    labels[6, 6, 6] = 4  # one ET voxel alone: a 1-voxel WT component, removed
    out = rules.apply(labels, "brats2021")
    assert out[6, 6, 6] == 0 and (out[1:3, 1:3, 1:3] == 2).all()
    # in mm3 with 2 mm voxels the 8-voxel component is 64 mm3
    mm3 = PostprocessingRules({"wt": 65.0}, unit="mm3")
    assert not mm3.apply(labels, "brats2021", (2.0, 2.0, 2.0)).any()


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ([1, 2], "must be a mapping"),
        ({"min_size": 3}, "unknown keys ['min_size']"),
        ({"min_component_size": {"ncr": 3}}, "unknown regions ['ncr']"),
        ({"min_component_size": {"et": -1}}, "min_component_size#et must be a finite number >= 0"),
        ({"min_enhancing_size": "10"}, "min_enhancing_size must be a finite number"),
        ({"unit": "ml"}, "unit must be one of"),
    ],
)
def test_bad_entries_name_the_config_and_setting(entry, message: str):
    with pytest.raises(ValueError, match=r"run/configs/inference\.json: postprocessing_rules") as exc:
        PostprocessingRules.from_config(entry, "run/configs/inference.json")
    assert message in str(exc.value)
