"""Stage 1 of the MMCSAL reconstruction: self-supervised pre-training of the per-modality encoders (§8.1, §8.2).

The encoders are those of :class:`brats_cggm.brats.model.MultiEncoderUNet`, so that the pre-trained weights
initialise a training run (:func:`brats_cggm.brats.encoder_weights.save_encoder_weights`,
:func:`brats_cggm.brats.encoder_weights.load_encoder_weights`). A view of modality
``m`` is a 3D patch around a shared brain centre, jittered and intensity-augmented independently per modality;
its representation is the spatial mean of the encoder's deepest level, mapped by a projection head.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from brats_cggm.brats.model import MultiEncoderUNet, build_network
from brats_cggm.selection.losses import cross_modal_info_nce, prototype_loss

__all__ = [
    "PretrainingConfig",
    "PretrainingResult",
    "ProjectionHeads",
    "embed_views",
    "pretrain_encoders",
    "sample_views",
]


@dataclass
class PretrainingConfig:
    """Settings of :func:`pretrain_encoders` (the defaults are ours, docs/methods.md §8.2).

    Attributes:
        preset: network preset of :func:`brats_cggm.brats.model.build_network`.
        features: encoder widths replacing the preset's, or None.
        patch_size: side of the cubic views, in voxels; a multiple of the network's divisor.
        jitter: largest per-axis offset of a modality's patch from the shared centre, in voxels.
        steps: optimisation steps.
        batch_size: cases per step (the InfoNCE negatives are the batch's other cases); at least 2.
        learning_rate: AdamW learning rate.
        temperature: ``tau`` of the cross-modal InfoNCE.
        prototype_weight: ``w_proto``; 0 trains without prototypes.
        num_prototypes: ``P``.
        prototype_temperature: ``tau_p``.
        embedding_dim: output width ``d`` of the projection heads.
        intensity_scale: half-width of the multiplicative intensity jitter.
        intensity_shift: half-width of the additive intensity jitter.
    """

    preset: str = "cpu"
    features: Sequence[int] | None = None
    patch_size: int = 32
    jitter: int = 4
    steps: int = 200
    batch_size: int = 8
    learning_rate: float = 1e-3
    temperature: float = 0.1
    prototype_weight: float = 1.0
    num_prototypes: int = 8
    prototype_temperature: float = 0.1
    embedding_dim: int = 64
    intensity_scale: float = 0.1
    intensity_shift: float = 0.1

    def check(self) -> None:
        """Raise ``ValueError`` naming the first setting out of range."""
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be at least 2 (InfoNCE needs negatives), got {self.batch_size}.")
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}.")
        if self.jitter < 0:
            raise ValueError(f"jitter must be >= 0, got {self.jitter}.")
        if self.num_prototypes < 2:
            raise ValueError(f"num_prototypes must be at least 2, got {self.num_prototypes}.")
        if self.temperature <= 0 or self.prototype_temperature <= 0:
            raise ValueError("temperatures must be positive.")


class ProjectionHeads(nn.ModuleList):
    """One Linear-ReLU-Linear projection head per modality, from the deepest encoder level to ``dim``.

    Args:
        num_modalities: number of heads.
        in_features: width of the encoders' deepest level.
        dim: output width.
    """

    def __init__(self, num_modalities: int, in_features: int, dim: int = 64) -> None:
        super().__init__(
            nn.Sequential(nn.Linear(in_features, dim), nn.ReLU(), nn.Linear(dim, dim)) for _ in range(num_modalities)
        )


@dataclass
class PretrainingResult:
    """The pre-trained modules and the loss history.

    Attributes:
        network: the network whose ``encoders`` were trained (the rest is untouched).
        heads: the projection heads.
        prototypes: (P, d) prototypes (empty when ``prototype_weight`` is 0).
        history: per step, ``{"loss", "info_nce", "prototype"}``.
    """

    network: MultiEncoderUNet
    heads: ProjectionHeads
    prototypes: torch.Tensor
    history: list[dict[str, float]] = field(default_factory=list)


def embed_views(network: MultiEncoderUNet, heads: ProjectionHeads, views: torch.Tensor) -> list[torch.Tensor]:
    """L2-normalised embeddings of views, one (B, d) tensor per modality.

    Args:
        network: provides ``encoders[m]``.
        heads: projection heads.
        views: (B, M, *patch): channel ``m`` goes to encoder ``m``.

    Returns:
        ``z^m = g_m(mean(phi_m(x^m)[-1])) / ||.||`` for every modality ``m``.
    """
    out = []
    for m, (encoder, head) in enumerate(zip(network.encoders, heads)):
        deepest = encoder(views[:, m : m + 1])[-1]
        out.append(F.normalize(head(deepest.flatten(2).mean(dim=2)), dim=1))
    return out


def _brain_voxels(volume: torch.Tensor) -> np.ndarray:
    mask = (volume != 0).any(dim=0)
    coords = torch.nonzero(mask).numpy()
    if len(coords) == 0:
        coords = np.array([[s // 2 for s in volume.shape[1:]]])
    return coords


def sample_views(
    volume: torch.Tensor,
    patch_size: int,
    jitter: int,
    rng: np.random.Generator,
    intensity_scale: float = 0.1,
    intensity_shift: float = 0.1,
) -> torch.Tensor:
    """One multimodal view of a case: per-modality patches around a shared brain centre (§8.1).

    Args:
        volume: (M, X, Y, Z) z-scored case, zero outside the head.
        patch_size: side of the cubic patches.
        jitter: largest per-axis offset of each modality's patch from the shared centre.
        rng: the random generator (centre, offsets, intensities).
        intensity_scale: each modality is multiplied by ``1 + U(-s, s)``.
        intensity_shift: and shifted by ``U(-t, t)``.

    Returns:
        (M, p, p, p) tensor.
    """
    num = volume.shape[0]
    half = patch_size // 2
    margin = half + jitter
    padded = F.pad(volume, [margin, margin] * 3)
    coords = _brain_voxels(volume)
    centre = coords[rng.integers(len(coords))]
    patches = []
    for m in range(num):
        offset = rng.integers(-jitter, jitter + 1, size=3) if jitter else np.zeros(3, dtype=int)
        start = [int(c + o + margin - half) for c, o in zip(centre, offset)]
        patch = padded[m, start[0] : start[0] + patch_size, start[1] : start[1] + patch_size]
        patch = patch[:, :, start[2] : start[2] + patch_size]
        scale = 1.0 + rng.uniform(-intensity_scale, intensity_scale)
        shift = rng.uniform(-intensity_shift, intensity_shift)
        patches.append(patch * scale + shift)
    return torch.stack(patches)


def pretrain_encoders(
    volumes: Sequence[torch.Tensor],
    modalities: Sequence[str],
    config: PretrainingConfig | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: Callable[[int, dict[str, float]], None] | None = None,
) -> PretrainingResult:
    """Pre-train the per-modality encoders on an unlabelled pool (MMCSAL stage 1, §8.2).

    Loss per step: ``L_cm + w_proto * L_proto`` on one view per case of a batch of ``batch_size`` cases,
    drawn without replacement (a new permutation of the pool whenever it is used up).

    Args:
        volumes: the pool's cases, each (M, X, Y, Z), z-scored, zero outside the head.
        modalities: modality names, in channel order.
        config: the settings; None for the defaults.
        seed: seeds the network's initialisation, the batches and the views.
        device: where to train.
        progress: called after each step with the step index and its losses (e.g. a tqdm update).

    Returns:
        The trained network, heads, prototypes and history.

    Raises:
        ValueError: a setting out of range, or fewer cases than ``batch_size`` (with at least 2 cases, the
            batch is shrunk to the pool instead).
    """
    config = config or PretrainingConfig()
    config.check()
    if len(volumes) < 2:
        raise ValueError(f"pre-training needs at least 2 cases, got {len(volumes)}.")
    if any(v.shape[0] != len(modalities) for v in volumes):
        raise ValueError(f"every case must have {len(modalities)} channels ({list(modalities)}).")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    overrides = {} if config.features is None else {"features": tuple(config.features)}
    network = build_network(config.preset, modalities, **overrides).to(device)
    if config.patch_size % network.divisor:
        raise ValueError(f"patch_size {config.patch_size} must be a multiple of {network.divisor}.")
    heads = ProjectionHeads(len(modalities), network.features[-1], config.embedding_dim).to(device)
    use_prototypes = config.prototype_weight > 0
    prototypes = nn.Parameter(
        F.normalize(torch.randn(config.num_prototypes if use_prototypes else 0, config.embedding_dim), dim=1).to(device)
    )
    params = [*network.encoders.parameters(), *heads.parameters()] + ([prototypes] if use_prototypes else [])
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate)
    batch_size = min(config.batch_size, len(volumes))
    order: list[int] = []
    history: list[dict[str, float]] = []
    network.train()
    heads.train()
    for step in range(config.steps):
        if len(order) < batch_size:
            order = [int(i) for i in rng.permutation(len(volumes))]
        batch, order = order[:batch_size], order[batch_size:]
        views = torch.stack(
            [
                sample_views(
                    volumes[i], config.patch_size, config.jitter, rng, config.intensity_scale, config.intensity_shift
                )
                for i in batch
            ]
        ).to(device)
        embeddings = embed_views(network, heads, views)
        info_nce = cross_modal_info_nce(embeddings, config.temperature)
        proto = (
            prototype_loss(embeddings, prototypes, config.prototype_temperature)
            if use_prototypes
            else info_nce.new_zeros(())
        )
        loss = info_nce + config.prototype_weight * proto
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        record = {
            "loss": float(loss.detach()),
            "info_nce": float(info_nce.detach()),
            "prototype": float(proto.detach()),
        }
        history.append(record)
        if progress is not None:
            progress(step, record)
    network.eval()
    heads.eval()
    return PretrainingResult(network=network, heads=heads, prototypes=prototypes.detach().cpu(), history=history)
