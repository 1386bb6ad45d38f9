"""BraTS as a task of the engine: region loss, auxiliary targets, per-modality Dice as ε."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss

__all__ = ["BratsSegmentationTask", "downsample_regions", "modality_dice"]


def downsample_regions(regions: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Region masks ``(B, C, *spatial)`` at ``size``: average over each block, then majority (≥ 0.5)."""
    if tuple(regions.shape[2:]) == tuple(size):
        return regions
    factor = [s // t for s, t in zip(regions.shape[2:], size)]
    if any(s != t * f for s, t, f in zip(regions.shape[2:], size, factor)):
        raise ValueError(f"cannot down-sample labels of shape {tuple(regions.shape[2:])} to {tuple(size)}")
    pooled = F.avg_pool3d(regions.float(), kernel_size=factor, stride=factor)
    return (pooled >= 0.5).to(regions.dtype)


def modality_dice(logits: torch.Tensor, regions: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Dice of each region of a thresholded sigmoid prediction, averaged over the batch.

    Both empty counts as 1, as in the BraTS challenge.

    Args:
        logits: ``(B, R, *spatial)`` region logits.
        regions: ``(B, R, *spatial)`` binary region masks.
        threshold: probability threshold.

    Returns:
        ``(R,)`` Dice per region.
    """
    pred = (torch.sigmoid(logits) >= threshold).float()
    target = (regions >= 0.5).float()
    dims = tuple(range(2, pred.ndim))
    intersection = (pred * target).sum(dims)
    total = pred.sum(dims) + target.sum(dims)
    dice = torch.where(total > 0, 2.0 * intersection / total.clamp_min(1e-8), torch.ones_like(total))
    return dice.mean(0)


class BratsSegmentationTask:
    """Region-wise (TC, WT, ET) sigmoid segmentation: Dice + BCE loss; ε = mean Dice of ET, TC, WT.

    Auxiliary heads may predict at a reduced resolution; their targets are the region masks
    down-sampled by majority vote to that resolution.

    Args:
        dice_weight: weight of the soft Dice loss.
        bce_weight: weight of the binary cross-entropy.
    """

    def __init__(self, dice_weight: float = 1.0, bce_weight: float = 1.0) -> None:
        self.dice_weight, self.bce_weight = float(dice_weight), float(bce_weight)
        self.dice = DiceLoss(sigmoid=True, smooth_nr=1e-5, smooth_dr=1e-5)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        targets = targets.to(logits.dtype)
        loss = self.dice_weight * self.dice(logits, targets)
        return loss + self.bce_weight * F.binary_cross_entropy_with_logits(logits, targets)

    def aux_targets(self, targets: torch.Tensor, aux_logits: torch.Tensor) -> torch.Tensor:
        return downsample_regions(targets, tuple(aux_logits.shape[2:]))

    def utilization(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return modality_dice(logits, targets).mean()
