"""BratsSegmentationTask: region loss, auxiliary heads' targets and utilization ε, against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from brats_cggm.brats.task import BratsSegmentationTask, downsample_regions, modality_dice
from brats_cggm.core.task import Task


def _soft_dice_loss(logits: torch.Tensor, targets: torch.Tensor, smooth: float = 1e-5) -> torch.Tensor:
    """1 - soft Dice of sigmoid(logits), per sample and channel, averaged (MONAI's DiceLoss, written out)."""
    p = torch.sigmoid(logits.double())
    t = targets.double()
    dims = tuple(range(2, p.ndim))
    dice = (2 * (p * t).sum(dims) + smooth) / (p.sum(dims) + t.sum(dims) + smooth)
    return (1 - dice).mean()


def _bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    p = torch.sigmoid(logits.double())
    t = targets.double()
    return -(t * torch.log(p) + (1 - t) * torch.log(1 - p)).mean()


def test_is_a_task():
    assert isinstance(BratsSegmentationTask(), Task)


def test_loss_of_a_single_voxel_by_hand():
    # one voxel, one region, logit 0 (p = 1/2), target 1: Dice = (1 + s) / (1.5 + s), BCE = log 2
    task = BratsSegmentationTask()
    loss = task.loss(torch.zeros(1, 1, 1, 1, 1), torch.ones(1, 1, 1, 1, 1))
    s = 1e-5
    assert float(loss) == pytest.approx(1 - (1 + s) / (1.5 + s) + math.log(2), rel=1e-6)


@pytest.mark.parametrize("dice_weight,bce_weight", [(1.0, 1.0), (0.3, 2.0), (0.0, 1.0), (1.0, 0.0)])
def test_loss_is_weighted_soft_dice_plus_bce(dice_weight, bce_weight):
    g = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(2, 3, 4, 5, 6, generator=g)
    targets = (torch.rand(2, 3, 4, 5, 6, generator=g) > 0.6).float()
    targets[1, 2] = 0  # an empty region
    task = BratsSegmentationTask(dice_weight=dice_weight, bce_weight=bce_weight)
    expected = dice_weight * _soft_dice_loss(logits, targets) + bce_weight * _bce(logits, targets)
    loss = task.loss(logits, targets)
    assert loss.shape == () and float(loss) == pytest.approx(float(expected), rel=1e-5)


def test_loss_accepts_integer_targets_and_is_differentiable():
    logits = torch.randn(1, 3, 4, 4, 4, requires_grad=True)
    targets = torch.randint(0, 2, (1, 3, 4, 4, 4))
    loss = BratsSegmentationTask().loss(logits, targets)
    loss.backward()
    assert logits.grad is not None and float(loss.detach()) == pytest.approx(
        float(_soft_dice_loss(logits.detach(), targets) + _bce(logits.detach(), targets)), rel=1e-5
    )


def test_perfect_confident_prediction_has_a_small_loss():
    targets = torch.zeros(1, 3, 4, 4, 4)
    targets[:, :, :2] = 1
    logits = 20 * (2 * targets - 1)
    assert float(BratsSegmentationTask().loss(logits, targets)) < 1e-4


def test_aux_targets_are_majority_votes_over_blocks():
    # a 4^3 mask to 2^3: each 2x2x2 block has k ones; majority means k >= 4 (a tie counts as the region)
    regions = torch.zeros(1, 1, 4, 4, 4)
    ones_per_block = {(0, 0, 0): 3, (0, 0, 1): 4, (0, 1, 0): 5, (1, 1, 1): 8, (1, 0, 0): 1}
    for (i, j, k), n in ones_per_block.items():
        block = torch.zeros(8)
        block[:n] = 1
        regions[0, 0, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2, 2 * k : 2 * k + 2] = block.reshape(2, 2, 2)
    aux_logits = torch.zeros(1, 1, 2, 2, 2)
    targets = BratsSegmentationTask().aux_targets(regions, aux_logits)
    expected = torch.zeros(1, 1, 2, 2, 2)
    for (i, j, k), n in ones_per_block.items():
        expected[0, 0, i, j, k] = float(n >= 4)
    assert torch.equal(targets, expected)


def test_aux_targets_follow_each_spatial_factor_and_keep_dtype():
    regions = torch.zeros(2, 3, 8, 4, 2, dtype=torch.uint8)
    regions[1, 2, :4] = 1
    targets = downsample_regions(regions, (2, 2, 1))
    assert targets.shape == (2, 3, 2, 2, 1) and targets.dtype == torch.uint8
    assert targets[1, 2, 0].all() and not targets[1, 2, 1].any() and not targets[0].any()


def test_aux_targets_at_full_resolution_are_the_targets():
    regions = torch.rand(1, 3, 4, 4, 4) > 0.5
    assert BratsSegmentationTask().aux_targets(regions, torch.zeros(1, 3, 4, 4, 4)) is regions


def test_aux_targets_need_a_whole_factor():
    with pytest.raises(ValueError, match="cannot down-sample"):
        downsample_regions(torch.zeros(1, 3, 6, 6, 6), (4, 4, 4))


def test_modality_dice_by_hand():
    # batch of 2, 3 regions, 4 voxels; the prediction is sigmoid(logit) >= 0.5, i.e. logit >= 0
    logits = torch.tensor(
        [
            [[1.0, 1.0, -1.0, -1.0], [0.0, -1.0, -1.0, -1.0], [-1.0, -1.0, -1.0, -1.0]],
            [[1.0, 1.0, 1.0, 1.0], [-1.0, -1.0, -1.0, -1.0], [-1.0, -1.0, -1.0, 2.0]],
        ]
    ).reshape(2, 3, 4, 1, 1)
    targets = torch.tensor(
        [
            [[1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]],
            [[1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0]],
        ],
        dtype=torch.float32,
    ).reshape(2, 3, 4, 1, 1)
    # region 0: 2·1/(2+1) and 2·2/(4+2); region 1: 2·1/(1+1) (logit 0 counts) and both empty = 1; region 2:
    # empty prediction against an empty target = 1, a wrong voxel = 0
    per_region = torch.tensor([(2 / 3 + 4 / 6) / 2, (1.0 + 1.0) / 2, (1.0 + 0.0) / 2])
    torch.testing.assert_close(modality_dice(logits, targets), per_region)
    utilization = BratsSegmentationTask().utilization(logits, targets)
    assert utilization.shape == () and float(utilization) == pytest.approx(float(per_region.mean()))


def test_modality_dice_threshold():
    logits = torch.tensor([0.5, -0.5]).reshape(1, 1, 2, 1, 1)  # p = 0.62, 0.38
    targets = torch.tensor([1.0, 1.0]).reshape(1, 1, 2, 1, 1)
    assert float(modality_dice(logits, targets, threshold=0.5)) == pytest.approx(2 / 3)
    assert float(modality_dice(logits, targets, threshold=0.3)) == pytest.approx(1.0)
    assert float(modality_dice(logits, targets, threshold=0.7)) == pytest.approx(0.0)
