"""Probing a frozen encoder: the probe on toy features with a known answer, its plateau stop, its settings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from brats_cggm.brats.analysis.probes import EncoderProbe, ProbeSettings, fit_probe, has_plateaued
from brats_cggm.brats.model import SegmentationAuxHead
from brats_cggm.brats.task import BratsSegmentationTask, modality_dice

FEATURES = (2, 2, 2)


class PoolingEncoder(nn.Module):
    """A fixed "encoder": level k is the input average-pooled by 2^k, repeated to FEATURES[k] channels."""

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [
            F.avg_pool3d(x, 2**k).repeat(1, c, 1, 1, 1) if k else x.repeat(1, c, 1, 1, 1)
            for k, c in enumerate(FEATURES)
        ]


def _toy_cases(informative: bool, n: int, seed: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Blobs; the input shows them (informative) or is noise unrelated to them."""
    generator = torch.Generator().manual_seed(seed)
    images, regions = [], []
    grid = torch.stack(torch.meshgrid(*[torch.arange(16.0)] * 3, indexing="ij"))
    for _ in range(n):
        centre = torch.randint(4, 12, (3, 1, 1, 1), generator=generator).float()
        blob = ((grid - centre) ** 2).sum(0).sqrt() < 4
        regions.append(blob.float().expand(3, -1, -1, -1).unsqueeze(0))
        noise = torch.randn(1, 1, 16, 16, 16, generator=generator)
        images.append((blob.float() + 0.1 * noise) if informative else noise)
    return images, regions


def _toy_probe_dice(informative: bool) -> tuple[float, int]:
    encoder, task = PoolingEncoder(), BratsSegmentationTask()
    torch.manual_seed(0)
    head = SegmentationAuxHead(FEATURES, 3, channels=4, output_stride=1, norm="batch")
    images, regions = _toy_cases(informative, 12, seed=1)
    features = [encoder(image) for image in images]
    targets = [task.aux_targets(r, head(f)) for r, f in zip(regions, features)]
    settings = ProbeSettings(max_steps=150, min_steps=40, plateau_window=20, learning_rate=1e-2, batch_size=4)
    fit = fit_probe(head, features, targets, task.loss, settings)
    assert 2 * settings.plateau_window <= fit.steps <= settings.max_steps and len(fit.losses) == fit.steps
    probe = EncoderProbe(encoder, head, channel=0)
    test_images, test_regions = _toy_cases(informative, 6, seed=2)
    with torch.no_grad():
        dice = [float(modality_dice(probe(x), r).mean()) for x, r in zip(test_images, test_regions)]
    return float(np.mean(dice)), fit.steps


def test_probe_finds_what_the_features_hold() -> None:
    informative, _ = _toy_probe_dice(True)
    uninformative, _ = _toy_probe_dice(False)
    assert informative > 0.9  # the features show the blob: the probe recovers it
    assert uninformative < 0.3  # pure noise: nothing to find (a blob is ~6% of the volume)


def test_has_plateaued() -> None:
    assert not has_plateaued([1.0] * 5, window=3, tolerance=0.01)  # too few steps
    assert has_plateaued([1.0] * 6, window=3, tolerance=0.01)
    assert not has_plateaued([1.0, 1.0, 1.0, 0.5, 0.5, 0.5], window=3, tolerance=0.01)
    # 0.5% better: flat at 1%, still improving at 0.1%
    losses = [1.0, 1.0, 1.0, 0.995, 0.995, 0.995]
    assert has_plateaued(losses, 3, 0.01) and not has_plateaued(losses, 3, 0.001)


def test_fit_probe_refuses_mismatched_inputs() -> None:
    with pytest.raises(ValueError, match="feature pyramids"):
        fit_probe(nn.Linear(1, 1), [], [], lambda a, b: a.sum())


def test_probe_settings_checked() -> None:
    with pytest.raises(ValueError, match="max_steps"):
        ProbeSettings(max_steps=0)


class ConstantProbe(nn.Module):
    """Predicts 0 logits whatever its weight: its loss never changes."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1))

    def forward(self, pyramid: list[torch.Tensor]) -> torch.Tensor:
        return torch.zeros_like(pyramid[0]).expand(-1, 3, -1, -1, -1) * self.weight


def test_no_plateau_stop_before_min_steps() -> None:
    features, targets = [[torch.ones(1, 1, 2, 2, 2)]], [torch.ones(1, 3, 2, 2, 2)]
    settings = ProbeSettings(max_steps=50, min_steps=12, plateau_window=3)
    fit = fit_probe(ConstantProbe(), features, targets, F.binary_cross_entropy_with_logits, settings)
    assert fit.steps == 12 and fit.plateaued  # flat from the start, yet min_steps are taken
    settings = ProbeSettings(max_steps=8, min_steps=12, plateau_window=3)
    fit = fit_probe(ConstantProbe(), features, targets, F.binary_cross_entropy_with_logits, settings)
    assert fit.steps == 8 and not fit.plateaued  # the budget ends first
