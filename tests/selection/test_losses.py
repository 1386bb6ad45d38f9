"""The MMCSAL reconstruction's losses on hand-computed inputs (docs/methods.md §8.2, §8.3)."""

from __future__ import annotations

import math

import pytest
import torch

from brats_cggm.selection.losses import (
    cross_modal_info_nce,
    misalignment,
    modality_gap,
    multimodal_similarity,
    prototype_assignments,
    prototype_loss,
    selection_objective,
)

E1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])


def test_info_nce_of_two_cases_and_two_modalities_by_hand():
    # logits of modality 0 against 1: [[1, 0], [0, 1]] / 0.5 = [[2, 0], [0, 2]]; every row's loss is
    # -log(e^2 / (e^2 + 1)) = log(1 + e^-2), in both directions
    loss = cross_modal_info_nce([E1, E1], temperature=0.5)
    assert float(loss) == pytest.approx(math.log(1 + math.exp(-2)), rel=1e-6)


def test_info_nce_is_log_batch_size_when_modalities_carry_no_pairing():
    same = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    assert float(cross_modal_info_nce([same, same, same])) == pytest.approx(math.log(3), rel=1e-6)


def test_info_nce_rejects_one_modality_and_mismatched_shapes():
    with pytest.raises(ValueError, match="two modalities"):
        cross_modal_info_nce([E1])
    with pytest.raises(ValueError, match="shape"):
        cross_modal_info_nce([E1, E1[:1]])


def test_prototype_assignment_by_hand():
    q = prototype_assignments(torch.tensor([[1.0, 0.0]]), torch.tensor([[2.0, 0.0], [0.0, 1.0]]), temperature=1.0)
    # the prototypes are normalised: similarities 1 and 0
    e = math.e
    assert q.tolist()[0] == pytest.approx([e / (e + 1), 1 / (e + 1)], rel=1e-6)


def test_prototype_loss_rewards_confident_and_spread_assignments():
    prototypes = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # each view on its own prototype, the two views on different ones: per view entropy h(p) with
    # p = softmax([10, 0]); mean assignment exactly uniform: entropy log 2
    spread = prototype_loss([E1, E1], prototypes, temperature=0.1)
    p = 1 / (1 + math.exp(-10))
    h = -(p * math.log(p) + (1 - p) * math.log(1 - p))
    assert float(spread) == pytest.approx(h - math.log(2), rel=1e-5)
    collapsed = prototype_loss([E1[:1].repeat(2, 1)] * 2, prototypes, temperature=0.1)
    # both views on one prototype: the mean assignment has entropy h, the loss is h - h = 0
    assert float(collapsed) == pytest.approx(0.0, abs=1e-6)
    assert float(spread) < float(collapsed)


def test_modality_gap_by_hand():
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    b = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    assert modality_gap([a, b]) == pytest.approx(math.sqrt(2))
    # three modalities: pairs (a,b) sqrt 2, (a,a) 0, (b,a) sqrt 2 -> mean 2 sqrt2 / 3
    assert modality_gap([a, a, b]) == pytest.approx(2 * math.sqrt(2) / 3)


def test_multimodal_similarity_and_misalignment_by_hand():
    aligned = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    crossed = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    # s = 1/4 (<a1,b1> + <a1,b2> + <a2,b1> + <a2,b2>) = 1/4 (1 + 0 + 1 + 0)
    assert float(multimodal_similarity(aligned, crossed)) == pytest.approx(0.5)
    assert misalignment(torch.cat([aligned, crossed])).tolist() == pytest.approx([0.0, 1.0])


def test_selection_objective_by_hand():
    cases = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]])
    centres = cases.clone()
    # distribution: each case's best similarity 1 -> -1/tau; diversity: one other centre, similarity 0 -> log e^0 = 0;
    # alignment: both centres aligned -> 0
    assert float(selection_objective(cases, centres, temperature=0.5, lambda_align=3.0)) == pytest.approx(-2.0)
    misaligned = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [1.0, 0.0]]])
    value = selection_objective(cases, misaligned, temperature=0.5, lambda_align=3.0)
    # every similarity is 1/2: distribution -1, diversity 1, alignment 3 * 1
    assert float(value) == pytest.approx(-1.0 + 1.0 + 3.0)
