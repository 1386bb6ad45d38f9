"""Collectives and rank queries that need no process group of their own: without one they are no-ops.

Balancers and the engine both call these; creating the process group and wrapping modules in DDP stay in
:mod:`brats_cggm.engine.distributed`.

- :func:`get_rank`, :func:`get_world_size`, :func:`is_main_process`, :func:`is_distributed`,
  :func:`barrier`: rank queries and synchronisation; once :func:`set_barrier_monitor` is given a gloo group
  (:func:`brats_cggm.engine.distributed.init_distributed` does), :func:`barrier` is a monitored barrier that
  fails after the run's ``distributed_timeout`` with a :class:`RankTimeoutError` naming the rank(s) that did
  not arrive, instead of waiting silently;
- :func:`all_reduce_mean`: every statistic a balancer decides from goes through it, so all ranks apply
  identical coefficients and the replicas stay identical;
- :func:`unwrap`: the bare module inside DDP / DataParallel / ``torch.compile`` / :class:`FeaturesForward`,
  so checkpoints are the same with and without DDP.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from brats_cggm.core.modules import child_module, forward_features

__all__ = [
    "DATA_BARRIER_TIMEOUT_S",
    "FeaturesForward",
    "RankTimeoutError",
    "all_reduce_mean",
    "barrier",
    "data_barrier_timeout_s",
    "get_rank",
    "get_world_size",
    "is_distributed",
    "is_main_process",
    "is_timeout_error",
    "monitor_timeout_s",
    "set_barrier_monitor",
    "unwrap",
]

#: Seconds the data-preparation barriers wait at least (rank 0 generating phantoms, the ranks building their
#: disk cache shards): that work legitimately keeps ranks apart far longer than a training step does.
DATA_BARRIER_TIMEOUT_S = 3600.0

_monitor: dict[str, Any] = {"group": None, "timeout_s": None}


class RankTimeoutError(RuntimeError):
    """Some rank did not reach a barrier within the timeout; the message names it.

    Attributes:
        ranks: the ranks that did not answer (empty when the backend's message did not say).
    """

    def __init__(self, message: str, ranks: list[int]) -> None:
        super().__init__(message)
        self.ranks = ranks

    def __reduce__(self) -> tuple:
        return type(self), (str(self), self.ranks)


def set_barrier_monitor(group: Any, timeout_s: float | None) -> None:
    """Make :func:`barrier` a monitored barrier on ``group`` (a gloo group of all ranks); None turns it off.

    Args:
        group: the ``torch.distributed`` gloo process group :func:`barrier` waits on, or None.
        timeout_s: seconds a rank waits for the others at :func:`barrier`.
    """
    _monitor.update(group=group, timeout_s=timeout_s)


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


def monitor_timeout_s() -> float | None:
    """The seconds :func:`barrier` waits by default (the run's ``distributed_timeout``); None without a monitor."""
    return _monitor["timeout_s"]


def data_barrier_timeout_s() -> float:
    """Seconds a data-preparation barrier waits: :data:`DATA_BARRIER_TIMEOUT_S`, or the run's timeout if longer."""
    return max(DATA_BARRIER_TIMEOUT_S, _monitor["timeout_s"] or 0.0)


def is_timeout_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a collective that timed out (gloo's ``Timed out waiting ...``, nccl's watchdog)."""
    return isinstance(exc, RuntimeError) and not isinstance(exc, RankTimeoutError) and "timed out" in str(exc).lower()


def _missing_ranks(message: str) -> list[int]:
    """The ranks gloo's ``monitored_barrier`` error names: rank 0 lists the late ones, the others rank 0."""
    late = re.search(r"Ranks? ([\d, ]+) failed to pass monitoredBarrier", message)
    if late:
        return [int(r) for r in re.findall(r"\d+", late.group(1))]
    return [int(r) for r in re.findall(r"send/recv from rank (\d+)", message)[:1]]


def barrier(where: str = "", timeout_s: float | None = None) -> None:
    """Wait until every rank arrives (nothing without a process group).

    With a monitor group (:func:`set_barrier_monitor`) a rank that does not arrive within the timeout
    makes the others fail, naming it, instead of stalling them silently; else ``dist.barrier()``.

    Args:
        where: what the ranks are about to do, for the error message (``"before validation"``).
        timeout_s: seconds to wait; None: the monitor's (the run's ``distributed_timeout``).

    Raises:
        RankTimeoutError: a rank did not arrive in time (the message names it, and which rank noticed).
    """
    if get_world_size() == 1:
        return
    group, default_s = _monitor["group"], _monitor["timeout_s"]
    if group is None:
        dist.barrier()
        return
    wait_s = timeout_s if timeout_s is not None else default_s
    try:
        dist.monitored_barrier(group=group, timeout=timedelta(seconds=wait_s), wait_all_ranks=True)
    except RuntimeError as exc:
        ranks = _missing_ranks(str(exc))
        named = ", ".join(map(str, ranks)) if ranks else "some rank"
        raise RankTimeoutError(
            f"rank {get_rank()}: rank {named} did not reach the barrier{' ' + where if where else ''} within "
            f"{wait_s:g} s (distributed_timeout): it is frozen, died or is far slower; look at its log",
            ranks,
        ) from exc


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
        output = forward_features(self.network, *args, **kwargs)
        return output.logits, output.features, output.head_input


def unwrap(module: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel / DataParallel / torch.compile / :class:`FeaturesForward`."""
    while True:
        if isinstance(module, nn.parallel.DistributedDataParallel | nn.DataParallel):
            module = child_module(module, "module")
        elif isinstance(module, FeaturesForward):
            module = module.network
        elif hasattr(module, "_orig_mod"):
            module = child_module(module, "_orig_mod")
        else:
            return module
