"""A tiny, deterministic BraTS-shaped training setup for engine and balancer tests (also run in subprocesses)."""

from __future__ import annotations

import torch

from brats_cggm.brats.model import AuxiliaryHeads, build_network
from brats_cggm.brats.task import BratsSegmentationTask
from brats_cggm.core.balancer import Balancer
from brats_cggm.engine.trainer import BalancedTrainer

MODALITIES = ("flair", "t1ce", "t1", "t2")


def make_batches(n: int, seed: int = 0, side: int = 16, batch: int = 2) -> list[dict[str, torch.Tensor]]:
    """``n`` batches whose region targets are visible mostly in the first modality (a dominant one)."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n):
        label = (torch.rand(batch, 3, side, side, side, generator=g) > 0.7).float()
        label[:, 1] = torch.maximum(label[:, 1], label[:, 0])  # WT contains TC
        image = torch.randn(batch, len(MODALITIES), side, side, side, generator=g)
        image[:, 0] += 2.0 * label[:, 1]
        image[:, 1] += 1.0 * label[:, 2]
        batches.append({"image": image, "label": label})
    return batches


def make_trainer(
    balancer: Balancer, batches: list, max_epochs: int = 1, seed: int = 0, aux_head: str = "light", **kwargs
) -> BalancedTrainer:
    """A ``BalancedTrainer`` over a tiny ``MultiEncoderUNet`` (widths 4, 8, 16) and its heads (``aux_head``: their
    kind, light or decoder), on ``batches``."""
    torch.manual_seed(seed)
    network = build_network("cpu", modalities=MODALITIES, features=(4, 8, 16))
    heads = AuxiliaryHeads.for_network(network, kind=aux_head)
    return BalancedTrainer(
        device="cpu",
        max_epochs=max_epochs,
        train_data_loader=batches,
        network=network,
        optimizer=torch.optim.SGD(network.parameters(), lr=kwargs.pop("lr", 0.05), momentum=0.9),
        task=BratsSegmentationTask(),
        balancer=balancer,
        aux_heads=heads,
        aux_optimizer=torch.optim.SGD(heads.parameters(), lr=0.05),
        **kwargs,
    )


def trained_norms(network: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give ``network``'s affine instance norms random scales and shifts, as training leaves them, in place.

    At initialisation (scale 1, shift 0) an instance-normalised encoder maps a flat (zero) image to zero
    features, and the fusion's normalisation cancels the mask's rescaling: an absent modality and a zeroed
    image then predict the same, and a test could not tell the two definitions apart.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, torch.nn.modules.instancenorm._InstanceNorm) and module.affine:
                module.weight.copy_(torch.rand(module.weight.shape, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.5)
    return network
