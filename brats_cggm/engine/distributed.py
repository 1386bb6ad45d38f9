"""torch.distributed helpers that degrade to no-ops in a single process."""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["all_reduce_mean", "is_main_process", "unwrap"]


def is_main_process() -> bool:
    """True on rank 0, or when no process group is initialised."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean of ``tensor`` over all ranks (returns ``tensor`` itself without a process group).

    Balancers decide from batch statistics; averaging them first makes every rank apply the same
    coefficients, so the replicas stay identical.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    reduced = tensor.detach().clone()
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
    return reduced / dist.get_world_size()


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DistributedDataParallel / DataParallel / torch.compile wrapper."""
    while True:
        if isinstance(module, torch.nn.parallel.DistributedDataParallel | torch.nn.DataParallel):
            module = module.module
        elif hasattr(module, "_orig_mod"):
            module = module._orig_mod
        else:
            return module
