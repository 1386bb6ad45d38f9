"""Collectives and rank queries that need no process group of their own: without one they are no-ops.

Balancers and the engine both call these; creating the process group and wrapping modules in DDP stay in
:mod:`brats_cggm.engine.distributed`.

- :func:`get_rank`, :func:`get_world_size`, :func:`is_main_process`, :func:`is_distributed`,
  :func:`barrier`: rank queries and synchronisation;
- :func:`all_reduce_mean`: every statistic a balancer decides from goes through it, so all ranks apply
  identical coefficients and the replicas stay identical;
- :func:`unwrap`: the bare module inside DDP / DataParallel / ``torch.compile`` / :class:`FeaturesForward`,
  so checkpoints are the same with and without DDP.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "FeaturesForward",
    "all_reduce_mean",
    "barrier",
    "get_rank",
    "get_world_size",
    "is_distributed",
    "is_main_process",
    "unwrap",
]


def is_distributed() -> bool:
    """True when a process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """This process's global rank (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    """The number of processes (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """True on rank 0, or when no process group is initialised."""
    return get_rank() == 0


def barrier() -> None:
    """``dist.barrier()`` when distributed, else nothing."""
    if get_world_size() > 1:
        dist.barrier()


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Average ``tensor`` over all ranks (a no-op without a process group); returns a new tensor.

    Balancers decide from batch statistics; averaging them first makes every rank apply the same
    coefficients, so the replicas stay identical. A CPU tensor is reduced on this rank's GPU under
    ``nccl`` (which only reduces CUDA tensors) and comes back on the CPU.
    """
    if get_world_size() == 1:
        return tensor
    reduced = tensor.detach().clone()
    if reduced.device.type == "cpu" and dist.get_backend() == "nccl":
        reduced = reduced.cuda()
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
    return (reduced / dist.get_world_size()).to(tensor.device)


class FeaturesForward(nn.Module):
    """A module whose ``forward`` is the network's ``forward_features``, so DDP sees the training forward.

    DDP synchronises gradients of what runs through the wrapped module's ``forward``; the trainer trains
    through ``forward_features``. This returns a plain tuple ``(logits, features, head_input)``, which
    DDP's output traversal understands.
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, *args: Any, **kwargs: Any) -> tuple:
        output = self.network.forward_features(*args, **kwargs)
        return output.logits, output.features, output.head_input


def unwrap(module: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel / DataParallel / torch.compile / :class:`FeaturesForward`."""
    while True:
        if isinstance(module, nn.parallel.DistributedDataParallel | nn.DataParallel):
            module = module.module
        elif isinstance(module, FeaturesForward):
            module = module.network
        elif hasattr(module, "_orig_mod"):
            module = module._orig_mod
        else:
            return module
