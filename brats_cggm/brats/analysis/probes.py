"""Probing a frozen encoder: a fresh auxiliary-head-shaped probe fitted on its features, scored by Dice.

The probe's budget is fixed in advance (:class:`ProbeSettings`) and the fit stops early once the training loss
plateaus (:func:`has_plateaued`), so that every encoder compared is probed the same way.

What an absent modality is does not enter a probe: it reads the features of **one** encoder computed from that
encoder's own input channel (:class:`EncoderProbe`, :func:`probe_encoder`), never the fusion, so the other
modalities are neither read nor fused and their absence (availability mask or zeroed input) changes nothing.
The probes' inputs are the real images; ``--absent`` of ``brats-cggm-diagnose`` and ``brats-cggm-compare``
applies to the subset valuation (robustness, Shapley) only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from brats_cggm.brats.analysis.runs import REGIONS, LoadedRun, as_tensor, mean_dice

__all__ = [
    "EncoderProbe",
    "ProbeFit",
    "ProbeSettings",
    "fit_probe",
    "has_plateaued",
    "probe_encoder",
    "training_patches",
]


@dataclass(frozen=True)
class ProbeSettings:
    """How a probe is fitted; fixed in advance, the same for every encoder compared.

    The defaults were set on the encoders of one-modality runs of the anatomical phantoms, where a probe's fit
    can be judged; how they were chosen, and what the earlier settings gave, is in ``docs/results.md``.

    Attributes:
        max_steps: the budget of optimiser steps.
        min_steps: steps always taken before a plateau may stop the fit (with batches of a few random patches the
            loss is noisy; a short fit could stop on noise).
        plateau_window: steps per window of :func:`has_plateaued`.
        plateau_tolerance: stop when a window's mean loss improves on the previous one by less than this
            fraction.
        learning_rate: Adam's learning rate.
        batch_size: patches per step.
        patches_per_case: training patches drawn per training case (the bundle's random crops, drawn once).
        channels: width of the probe's internal path (the auxiliary heads' default).
        seed: seeds the probe's initialisation, the patches and their order.
    """

    max_steps: int = 3000
    min_steps: int = 400
    plateau_window: int = 200
    plateau_tolerance: float = 0.01
    learning_rate: float = 1e-2
    batch_size: int = 4
    patches_per_case: int = 4
    channels: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("max_steps", "min_steps", "plateau_window", "batch_size", "patches_per_case", "channels"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"probe setting {name} must be at least 1, got {getattr(self, name)}")
        if not self.learning_rate > 0 or self.plateau_tolerance < 0:
            raise ValueError("probe learning_rate must be positive and plateau_tolerance not negative")


@dataclass
class ProbeFit:
    """The course of one probe's fitting.

    Attributes:
        losses: the training loss of every step.
        steps: steps taken.
        plateaued: whether it stopped on a plateau (else: the budget ran out).
    """

    losses: list[float]
    steps: int
    plateaued: bool


def has_plateaued(losses: Sequence[float], window: int, tolerance: float) -> bool:
    """Whether the loss has stopped improving: the last ``window`` steps' mean loss is lower than the mean of the
    ``window`` steps before by less than ``tolerance`` times the latter.

    Args:
        losses: the loss of every step so far.
        window: steps per window.
        tolerance: the relative improvement below which the loss counts as flat.

    Returns:
        False while fewer than ``2 * window`` losses exist.
    """
    if len(losses) < 2 * window:
        return False
    previous = float(np.mean(losses[-2 * window : -window]))
    last = float(np.mean(losses[-window:]))
    return previous - last < tolerance * abs(previous)


def fit_probe(
    probe: nn.Module,
    features: Sequence[Sequence[torch.Tensor]],
    targets: Sequence[torch.Tensor],
    loss_fn: Any,
    settings: ProbeSettings = ProbeSettings(),
) -> ProbeFit:
    """Fit ``probe`` on precomputed (frozen) features until the loss plateaus (after ``min_steps``) or the budget
    runs out.

    Args:
        probe: maps one feature pyramid (a list of ``(B, C_k, *S_k)`` tensors) to region logits.
        features: one pyramid per training patch (batch dimension 1), computed without gradients.
        targets: the region masks of each patch at the probe's output resolution, ``(1, R, *S)``.
        loss_fn: ``loss_fn(logits, targets)`` (e.g. :meth:`BratsSegmentationTask.loss`).
        settings: budget, plateau rule, optimiser.

    Returns:
        The losses and whether the fit plateaued; ``probe`` is trained in place and left in eval mode.

    Raises:
        ValueError: no patches, or ``features`` and ``targets`` of different lengths.
    """
    if not features or len(features) != len(targets):
        raise ValueError(f"probe: {len(features)} feature pyramids for {len(targets)} targets")
    generator = torch.Generator().manual_seed(settings.seed)
    optimizer = torch.optim.Adam(probe.parameters(), lr=settings.learning_rate)
    probe.train()
    losses: list[float] = []
    order = torch.randperm(len(features), generator=generator).tolist()
    position = 0
    plateaued = False
    for _ in range(settings.max_steps):
        batch = []
        for _ in range(min(settings.batch_size, len(features))):
            if position == len(order):
                order, position = torch.randperm(len(features), generator=generator).tolist(), 0
            batch.append(order[position])
            position += 1
        pyramid = [torch.cat([features[i][k] for i in batch]) for k in range(len(features[batch[0]]))]
        target = torch.cat([targets[i] for i in batch])
        loss = loss_fn(probe(pyramid), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if len(losses) >= settings.min_steps and has_plateaued(
            losses, settings.plateau_window, settings.plateau_tolerance
        ):
            plateaued = True
            break
    probe.eval()
    return ProbeFit(losses=losses, steps=len(losses), plateaued=plateaued)


class EncoderProbe(nn.Module):
    """A frozen encoder of one input channel followed by a probe head; logits at the input's resolution.

    Args:
        encoder: maps ``(B, 1, *S)`` to a feature pyramid (e.g. ``MultiEncoderUNet.encoders[i]``).
        head: maps the pyramid to region logits (possibly at a reduced resolution).
        channel: the input channel the encoder reads.
    """

    def __init__(self, encoder: nn.Module, head: nn.Module, channel: int) -> None:
        super().__init__()
        self.encoder, self.head, self.channel = encoder, head, int(channel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.encoder(x[:, self.channel : self.channel + 1]))
        if logits.shape[2:] != x.shape[2:]:
            mode = "trilinear" if x.ndim == 5 else "bilinear"
            logits = nn.functional.interpolate(logits, size=x.shape[2:], mode=mode, align_corners=False)
        return logits


def training_patches(run: LoadedRun, settings: ProbeSettings) -> list[dict]:
    """The probe's training patches: the bundle's random crops of the training cases, drawn once, seeded.

    Args:
        run: the loaded run.
        settings: the probe's settings (patches per case, seed).

    Returns:
        The preprocessed patches, all of the run's channels.
    """
    from brats_cggm.brats.data.transforms import train_transforms

    transform = train_transforms(patch_size=run.roi_size, num_samples=settings.patches_per_case, **run.options)
    transform.set_random_state(seed=settings.seed)
    patches = []
    for item in run.train_cases:
        drawn = transform(dict(item))
        patches.extend(drawn if isinstance(drawn, list) else [drawn])
    return patches


def probe_encoder(
    run: LoadedRun, modality: str, settings: ProbeSettings, device: Any, patches: Sequence[dict] | None = None
) -> dict[str, Any]:
    """Fit a fresh probe on the frozen encoder of ``modality`` of ``run`` and score it on the validation cases.

    Args:
        run: the loaded run.
        modality: one of the run's modalities.
        settings: the probe's budget and optimiser.
        device: where to compute.
        patches: the training patches (preprocessed, all of the run's channels); drawn when None.

    Returns:
        ``dice`` (TC, WT, ET, mean), ``steps``, ``plateaued``, ``final_loss``.
    """
    from brats_cggm.brats.model import SegmentationAuxHead
    from brats_cggm.brats.task import BratsSegmentationTask

    network: Any = run.network  # a MultiEncoderUNet: its encoders and the settings its heads are built with
    index = run.modalities.index(modality)
    encoder = network.encoders[index].eval()
    for parameter in encoder.parameters():
        parameter.requires_grad_(False)
    patches = training_patches(run, settings) if patches is None else patches
    torch.manual_seed(settings.seed)
    head = SegmentationAuxHead(
        network.features, network.out_channels, settings.channels, 2, network.spatial_dims, network.norm, network.act
    ).to(device)
    task = BratsSegmentationTask()
    features, targets = [], []
    with torch.no_grad():
        for patch in patches:
            image = as_tensor(patch["image"]).unsqueeze(0).to(device)
            pyramid = [f.detach() for f in encoder(image[:, index : index + 1])]
            features.append(pyramid)
            label = as_tensor(patch["label"]).unsqueeze(0).to(device).float()
            targets.append(task.aux_targets(label, head(pyramid)))
    fit = fit_probe(head, features, targets, task.loss, settings)
    from brats_cggm.brats.data.transforms import val_transforms

    dice = mean_dice(
        EncoderProbe(encoder, head, index), run.val_cases, val_transforms(**run.options), run.inferer, device
    )
    return {
        "dice": dict(zip(REGIONS, dice.tolist())),
        "steps": fit.steps,
        "plateaued": fit.plateaued,
        "final_loss": fit.losses[-1],
    }
