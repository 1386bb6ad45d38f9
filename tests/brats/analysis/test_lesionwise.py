"""Lesion-wise Dice of one case."""

from __future__ import annotations

import pytest
import torch

from brats_cggm.brats.analysis.lesionwise import case_lesionwise_dice


def test_lesionwise_dice_counts_every_lesion() -> None:
    reference = torch.zeros(3, 12, 12, 12)
    reference[:, 1:4, 1:4, 1:4] = 1
    reference[:, 7:10, 7:10, 7:10] = 1
    assert case_lesionwise_dice(reference, reference, (1, 1, 1), "brats2021") == pytest.approx([1, 1, 1])
    missed = reference.clone()
    missed[:, 7:10, 7:10, 7:10] = 0  # global Dice 2·27 / (27 + 54) = 0.667; lesion-wise (1 + 0) / 2
    assert case_lesionwise_dice(missed, reference, (1, 1, 1), "brats2021") == pytest.approx([0.5, 0.5, 0.5])
    spurious = reference.clone()
    spurious[:, 1:3, 9:11, 1:3] = 1  # a third, unmatched lesion: (1 + 1 + 0) / 3
    assert case_lesionwise_dice(spurious, reference, (1, 1, 1), "brats2021") == pytest.approx([2 / 3] * 3)
