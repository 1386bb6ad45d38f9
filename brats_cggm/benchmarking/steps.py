"""The training step under measurement: a synthetic BraTS batch and the trainer the bundle would build."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch

from brats_cggm.benchmarking.config import StepSpec

__all__ = ["BENCHMARK_EPOCHS", "balancer_kwargs", "build_optimizers", "build_trainer", "synthetic_batch"]

#: Every trainer the benchmark builds runs this many epochs per ``run()``; balancers are scheduled for it.
BENCHMARK_EPOCHS = 1


def synthetic_batch(spec: StepSpec) -> dict[str, torch.Tensor]:
    """A BraTS-shaped batch (regions visible mostly in the first modalities), on the CPU.

    Args:
        spec: the configuration.

    Returns:
        ``{"image": (B, M, *patch), "label": (B, 3, *patch)}``.
    """
    g = torch.Generator().manual_seed(spec.seed)
    shape = (spec.batch, 3, *spec.patch)
    label = (torch.rand(shape, generator=g) > 0.8).float()
    label[:, 1] = torch.maximum(label[:, 1], label[:, 0])  # WT contains TC
    image = torch.randn((spec.batch, len(spec.modalities), *spec.patch), generator=g)
    image[:, 0] += 2.0 * label[:, 1]
    if len(spec.modalities) > 1:
        image[:, 1] += 1.0 * label[:, 2]
    return {"image": image, "label": label}


def balancer_kwargs(name: str, modalities: Sequence[str]) -> dict[str, Any]:
    """Constructor arguments of the balancer ``name`` for a benchmark run.

    The methods' warm-ups are fitted into the benchmark's single epoch
    (:meth:`~brats_cggm.core.balancer.Balancer.short_run_kwargs`), so that every balancer acts in the
    steps that are timed.

    Args:
        name: registry name of the balancer.
        modalities: input modalities.

    Returns:
        ``modalities`` and the method's short-run schedule.

    Raises:
        ValueError: ``name`` is not registered.
    """
    from brats_cggm.balancing import balancer_class

    return {"modalities": tuple(modalities), **balancer_class(name).short_run_kwargs(BENCHMARK_EPOCHS)}


def build_optimizers(spec: StepSpec, network: torch.nn.Module, heads: torch.nn.Module) -> tuple[Any, Any]:
    """The network's and the heads' optimisers as the bundle configures them, without the learning-rate schedule.

    Args:
        spec: the configuration; ``spec.optimizer`` is ``"adamw"`` (the bundle's train.yaml) or ``"sgd"``
            (``configs/optimizers/sgd_paper.yaml``: momentum 0.9, weight decay 3e-4).
        network: the segmentation network.
        heads: the auxiliary heads.

    Returns:
        ``(optimizer, aux_optimizer)``.

    Raises:
        ValueError: an unknown ``spec.optimizer``.
    """
    if spec.optimizer == "adamw":
        return (
            torch.optim.AdamW(network.parameters(), lr=3e-3, weight_decay=1e-5),
            torch.optim.AdamW(heads.parameters(), lr=3e-3),
        )
    if spec.optimizer == "sgd":
        return (
            torch.optim.SGD(network.parameters(), lr=1e-2, momentum=0.9, weight_decay=3e-4),
            torch.optim.SGD(heads.parameters(), lr=6e-3, momentum=0.9, weight_decay=3e-4),
        )
    raise ValueError(f"unknown optimizer {spec.optimizer!r}; choose 'adamw' or 'sgd'")


def build_trainer(spec: StepSpec, data: Sequence[Any] | Iterable) -> Any:
    """A :class:`~brats_cggm.engine.trainer.BalancedTrainer` as the bundle builds it (clipping 12).

    Args:
        spec: the configuration.
        data: the trainer's data loader (a list of batches or a ``DataLoader``).

    Returns:
        The trainer, :data:`BENCHMARK_EPOCHS` epoch per ``run()``.

    Raises:
        Exception: whatever the balancer's constructor raises.
    """
    from brats_cggm.balancing import create_balancer
    from brats_cggm.brats.model import AuxiliaryHeads, apply_speed_options, build_network
    from brats_cggm.brats.task import BratsSegmentationTask
    from brats_cggm.engine.trainer import BalancedTrainer

    device = torch.device(spec.device)
    torch.manual_seed(spec.seed)
    overrides = {"features": spec.features} if spec.features is not None else {}
    network = build_network(spec.preset, modalities=spec.modalities, **overrides).to(device)
    heads = AuxiliaryHeads.for_network(network).to(device)
    balancer = create_balancer(spec.balancer, **balancer_kwargs(spec.balancer, spec.modalities))
    apply_speed_options([network, heads], channels_last=spec.channels_last, compile=spec.compile)
    optimizer, aux_optimizer = build_optimizers(spec, network, heads)
    amp_kwargs = {"dtype": torch.bfloat16 if spec.amp == "bf16" else torch.float16} if spec.amp else None
    return BalancedTrainer(
        device=device,
        max_epochs=BENCHMARK_EPOCHS,
        train_data_loader=data,
        network=network,
        optimizer=optimizer,
        task=BratsSegmentationTask(),
        balancer=balancer,
        aux_heads=heads,
        aux_optimizer=aux_optimizer,
        grad_clip=12.0,
        amp=bool(spec.amp) and device.type == "cuda",
        amp_kwargs=amp_kwargs,
        non_blocking=device.type == "cuda",
    )
