"""Per-case multimodal embeddings for selection: the brain-masked mean of patch embeddings (§8.1).

:func:`load_pool_volumes` reads the pool with the training preprocessing (no labels); :func:`case_embeddings`
tiles each case into patches, embeds each modality's patches with the pre-trained encoder and projection
head, and averages over the patches inside the brain.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from brats_cggm.brats.data.discovery import DatasetSpec
from brats_cggm.brats.model import MultiEncoderUNet
from brats_cggm.selection.pretraining import ProjectionHeads, embed_views

__all__ = ["brain_patches", "case_embeddings", "load_pool_volumes"]


def load_pool_volumes(spec: DatasetSpec, pixdim: Sequence[float] | None = None) -> list[torch.Tensor]:
    """Read every case of a data set as the training chain does (orientation, spacing, crop, z-score).

    Args:
        spec: the pool, from :func:`brats_cggm.brats.data.discovery.discover_dataset` (labels not needed).
        pixdim: target spacing in mm, or None to keep each case's.

    Returns:
        One (M, X, Y, Z) float tensor per case, in the order of ``spec.items``.
    """
    from monai.transforms import Compose

    from brats_cggm.brats.data.transforms import preprocessing

    chain = Compose(
        preprocessing(
            keys=("image",),
            label_convention=spec.label_convention,
            channel_order=spec.channel_order,
            pixdim=pixdim,
        )
    )
    return [chain({"image": item["image"]})["image"].as_tensor().float() for item in spec.items]


def brain_patches(volume: torch.Tensor, patch_size: int, min_brain_fraction: float = 0.5) -> torch.Tensor:
    """Non-overlapping cubic patches of a case that lie mostly inside the head.

    The volume is zero-padded to a multiple of ``patch_size``; a patch is kept when the fraction of its voxels
    with any non-zero channel is at least ``min_brain_fraction``. If none qualifies, the patch with the most
    brain is kept, so that every case gets an embedding.

    Args:
        volume: (M, X, Y, Z).
        patch_size: patch side.
        min_brain_fraction: the brain-mask threshold.

    Returns:
        (n, M, p, p, p) patches.
    """
    pads = []
    for size in reversed(volume.shape[1:]):
        pads += [0, (-size) % patch_size]
    padded = F.pad(volume, pads)
    p = patch_size
    tiles = padded.unfold(1, p, p).unfold(2, p, p).unfold(3, p, p)  # (M, nx, ny, nz, p, p, p)
    tiles = tiles.permute(1, 2, 3, 0, 4, 5, 6).reshape(-1, volume.shape[0], p, p, p)
    fractions = (tiles != 0).any(dim=1).flatten(1).float().mean(dim=1)
    keep = fractions >= min_brain_fraction
    if not bool(keep.any()):
        keep = fractions == fractions.max()
    return tiles[keep]


@torch.no_grad()
def case_embeddings(
    volumes: Sequence[torch.Tensor],
    network: MultiEncoderUNet,
    heads: ProjectionHeads,
    patch_size: int,
    min_brain_fraction: float = 0.5,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Per-case, per-modality embeddings ``e_i^m``: the L2-normalised mean of the brain patches' ``z^m``.

    Args:
        volumes: the cases, each (M, X, Y, Z).
        network: provides the encoders.
        heads: the projection heads.
        patch_size: the pre-training patch side.
        min_brain_fraction: see :func:`brain_patches`.
        batch_size: patches per forward pass.
        device: where to run the encoders.

    Returns:
        (N, M, d) tensor on the CPU, unit vectors per modality.
    """
    network.eval()
    heads.eval()
    out = []
    for volume in volumes:
        patches = brain_patches(volume, patch_size, min_brain_fraction)
        sums: torch.Tensor | None = None
        for start in range(0, len(patches), batch_size):
            z = embed_views(network, heads, patches[start : start + batch_size].to(device))
            part = torch.stack([e.sum(dim=0) for e in z]).cpu()  # (M, d)
            sums = part if sums is None else sums + part
        if sums is None:
            raise ValueError("a case without patches to embed")
        out.append(F.normalize(sums / len(patches), dim=1))
    return torch.stack(out)
