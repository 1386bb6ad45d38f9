"""A tiny CGGM training run that can be killed and resumed; used in one process and under torchrun."""

from __future__ import annotations

from pathlib import Path

import torch
from ignite.engine import Events
from monai.data import DataLoader, Dataset, DistributedSampler
from monai.handlers import LrScheduleHandler
from monai.transforms import Compose, RandGaussianNoised
from monai.utils import set_determinism

from brats_cggm.balancing.cggm import CGGMBalancer
from brats_cggm.brats.model import AuxiliaryHeads, build_network
from brats_cggm.brats.task import BratsSegmentationTask
from brats_cggm.core.distributed import is_distributed
from brats_cggm.engine.checkpoint import TrainingCheckpointSaver
from brats_cggm.engine.distributed import ddp_wrap
from brats_cggm.engine.modality_dropout import ModalityDropout
from brats_cggm.engine.trainer import BalancedTrainer
from tests.helpers.tiny_setup import MODALITIES, make_batches

__all__ = ["Killed", "Run", "build", "kill_at"]


class Killed(Exception):
    """Stands for the job being killed."""


class Run:
    """The trainer, its handlers, the bare network and heads, and the per-iteration log of one run."""

    def __init__(self, trainer: BalancedTrainer, handlers: list, network, heads, log: list[dict]) -> None:
        self.trainer, self.handlers, self.network, self.heads, self.log = trainer, handlers, network, heads, log

    def result(self) -> dict:
        """The log and every parameter of the network and the heads."""
        params = {f"network.{k}": v.detach().clone() for k, v in self.network.state_dict().items()}
        params |= {f"heads.{k}": v.detach().clone() for k, v in self.heads.state_dict().items()}
        return {"params": params, "log": list(self.log)}


def build(checkpoint_dir: Path, samples: int = 8, epochs: int = 3, modality_dropout: float = 0.0) -> Run:
    """Fresh objects: a tiny network and heads (DDP-wrapped under a process group), CGGM, SGD with momentum,
    a step LR schedule, shuffled data with a random augmentation, a checkpoint saver in ``checkpoint_dir``,
    and missing-modality training with probability ``modality_dropout``.
    Each rank trains on its own shard of ``samples`` samples, 2 per batch."""
    set_determinism(seed=0)
    network = build_network("cpu", modalities=MODALITIES, features=(4, 8, 16))
    heads = AuxiliaryHeads.for_network(network)
    batches = make_batches(samples // 2, side=16)
    data = [{"image": b["image"][i], "label": b["label"][i]} for b in batches for i in range(2)]
    dataset = Dataset(data, transform=Compose([RandGaussianNoised(keys="image", prob=0.5, std=0.5)]))
    if is_distributed():
        loader = DataLoader(dataset, batch_size=2, sampler=DistributedSampler(dataset, shuffle=True, seed=0))
    else:
        loader = DataLoader(dataset, batch_size=2, shuffle=True)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.05, momentum=0.9)
    aux_optimizer = torch.optim.SGD(heads.parameters(), lr=0.05, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    balancer = CGGMBalancer(MODALITIES, rho=1.0, lam=0.1, direction="grad")
    dropout = ModalityDropout(MODALITIES, p=modality_dropout)
    saved = {"network": network, "aux_heads": heads, "optimizer": optimizer, "aux_optimizer": aux_optimizer}
    saved |= {"lr_scheduler": scheduler, "balancer": balancer, "modality_dropout": dropout}
    # an absent modality's encoder and head get no gradient in that step
    ddp_options = {"find_unused_parameters": modality_dropout > 0}
    handlers = [
        LrScheduleHandler(scheduler, epoch_level=False, print_lr=False),
        TrainingCheckpointSaver(Path(checkpoint_dir) / "checkpoint.pt", saved),
    ]
    trainer = BalancedTrainer(
        device="cpu",
        max_epochs=epochs,
        train_data_loader=loader,
        network=ddp_wrap(network, **ddp_options),
        optimizer=optimizer,
        task=BratsSegmentationTask(),
        balancer=balancer,
        aux_heads=ddp_wrap(heads, **ddp_options),
        aux_optimizer=aux_optimizer,
        grad_clip=12.0,
        modality_dropout=dropout,
        train_handlers=handlers,
    )
    log: list[dict] = []

    def record(engine: BalancedTrainer) -> None:
        output = engine.state.output
        log.append(
            {
                "iteration": engine.state.iteration,
                "B": [float(output["balancer"][f"cggm/B/{m}"]) for m in MODALITIES],
                "task_loss": float(output["task_loss"]),  # this rank's batch: differs between ranks
                "dropped": {k: float(v) for k, v in output["modality_dropout"].items()},
            }
        )

    trainer.add_event_handler(Events.ITERATION_COMPLETED, record)
    return Run(trainer, handlers, network, heads, log)


def kill_at(run: Run, iteration: int) -> None:
    """Run ``run`` until ``iteration`` completes, then raise :class:`Killed` like a killed job (caught here)."""

    def kill(engine: BalancedTrainer) -> None:
        raise Killed

    run.trainer.add_event_handler(Events.ITERATION_COMPLETED(once=iteration), kill)
    try:
        run.trainer.run()
    except Killed:
        return
    raise AssertionError(f"the run ended before iteration {iteration}")
