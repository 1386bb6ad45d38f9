"""Challenge regions of each label convention, against the TC/WT/ET channels of labels_to_regions."""

from __future__ import annotations

import numpy as np
import pytest

from brats_cggm.brats.data.labels import REGIONS, labels_to_regions
from brats_cggm.brats.metrics.challenge_regions import challenge_region_labels, challenge_region_masks


def test_official_gli_regions_for_2023_labels():
    assert challenge_region_labels("brats2023") == {
        "et": (3,),
        "tc": (1, 3),
        "wt": (1, 2, 3),
        "netc": (1,),
        "snfh": (2,),
        "rc": (4,),
    }
    assert challenge_region_labels("brats2021") == {
        "et": (4,),
        "tc": (1, 4),
        "wt": (1, 2, 4),
        "netc": (1,),
        "snfh": (2,),
    }
    assert challenge_region_labels("msd")["tc"] == (2, 3)


@pytest.mark.parametrize(("convention", "values"), [("brats2021", [0, 1, 2, 4]), ("brats2023", [0, 1, 2, 3])])
def test_masks_equal_the_network_regions(convention, values):
    labels = np.random.default_rng(0).choice(values, size=(5, 6, 7)).astype(np.uint8)
    masks = challenge_region_masks(labels, convention)
    regions = labels_to_regions(labels, convention) > 0.5
    for i, region in enumerate(REGIONS):
        np.testing.assert_array_equal(masks[region], regions[i])


def test_undefined_region_is_refused():
    with pytest.raises(ValueError, match="not defined for label convention 'brats2021'"):
        challenge_region_masks(np.zeros((2, 2, 2)), "brats2021", ("rc",))
