"""Process groups and DDP wrapping; the helpers degrade to no-ops in a single process.

Multi-GPU and multi-node training use torch.distributed and DistributedDataParallel (DDP), the engine
MONAI itself uses, launched with ``torchrun`` (see ``docs/distributed.md`` and the bundle's
``configs/multi_gpu_train.yaml``, which calls the helpers here):

- :func:`init_distributed` / :func:`destroy_distributed`: the process group (``nccl`` on CUDA, ``gloo``
  on CPU), created in the bundle's ``initialize`` and destroyed in its ``finalize``, with the run's
  ``distributed_timeout``, and a gloo group on which :func:`~brats_cggm.core.distributed.barrier` is a
  monitored barrier naming a rank that does not arrive;
- :class:`RankSyncHandler`: the ranks meet at the end of each epoch, before validation and checkpointing,
  so a frozen rank is named there within ``distributed_timeout``;
- :func:`ddp_wrap`: DDP around the network (trained through ``forward_features``) or the auxiliary
  heads; :func:`brats_cggm.core.distributed.unwrap` returns the bare module, so checkpoints are the same
  with and without DDP;
- :func:`main_process_first`, :func:`main_process_handlers`, :func:`main_process_summary_writer`,
  :func:`quiet_non_main_logging`: only rank 0 writes files and logs;
- :func:`validation_sampler`: validation shards without padded duplicates.

The rank queries and the collectives balancers use (:func:`~brats_cggm.core.distributed.all_reduce_mean`)
are in :mod:`brats_cggm.core.distributed`.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from brats_cggm.core.devices import resolve_device
from brats_cggm.core.distributed import (
    FeaturesForward,
    RankTimeoutError,
    barrier,
    data_barrier_timeout_s,
    get_rank,
    get_world_size,
    is_distributed,
    is_main_process,
    is_timeout_error,
    monitor_timeout_s,
    set_barrier_monitor,
)
from brats_cggm.core.outputs import MultimodalOutput

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "DIAGNOSIS_TIMEOUT_S",
    "STARTUP_TIMEOUT_S",
    "FeaturesDistributedDataParallel",
    "RankSyncHandler",
    "ddp_wrap",
    "destroy_distributed",
    "init_distributed",
    "main_process_first",
    "main_process_handlers",
    "main_process_summary_writer",
    "quiet_non_main_logging",
    "validation_sampler",
]

logger = logging.getLogger(__name__)

#: Seconds the ranks that noticed a collective's timeout wait for the others before naming the missing ones: the
#: healthy ranks time out in the same collective, within moments of each other.
DIAGNOSIS_TIMEOUT_S = 30.0

#: Seconds a rank waits for the others in a collective or at a barrier (the bundles' ``distributed_timeout``):
#: well above the legitimate gaps between ranks in training (uneven validation shards, rank 0 writing a
#: checkpoint, torch.compile's first step), well below torch's 30 minutes of silence. docs/distributed.md.
DEFAULT_TIMEOUT_S = 600.0

#: Seconds the ranks wait for one another to create the process group: processes start at their own pace
#: (imports, a cold page cache, a busy node), so start-up gets torch's own 30 minutes, never less than the run's
#: timeout; the run's timeout applies from the moment every rank has joined.
STARTUP_TIMEOUT_S = 1800.0


def init_distributed(device: str | torch.device | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> torch.device:
    """Create the default process group from ``torchrun``'s environment; return this rank's device.

    Rendezvous (``MASTER_ADDR``, ``MASTER_PORT``, ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) comes from the
    environment ``torchrun`` sets. A CUDA device (or None with CUDA available) becomes
    ``cuda:LOCAL_RANK`` with ``nccl``; ``"cpu"`` trains on the CPU with ``gloo``. Once the group exists,
    a second call only returns the device.

    Args:
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` (N is replaced by ``LOCAL_RANK``) or None.
        timeout_s: seconds a rank waits for the others once every rank has joined: the collectives'
            timeout, and that of the monitored :func:`~brats_cggm.core.distributed.barrier` (a gloo group of
            all ranks, on CUDA too), which names a rank that does not arrive. Joining itself may take
            :data:`STARTUP_TIMEOUT_S`.

    Returns:
        The device this rank trains on.
    """
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    kind = torch.device(device).type if device is not None else resolve_device("auto").type
    resolved = torch.device(f"cuda:{local_rank}") if kind == "cuda" else torch.device(kind)
    if resolved.type == "cuda":
        torch.cuda.set_device(resolved)
    if not is_distributed():
        backend = "nccl" if resolved.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=max(timeout_s, STARTUP_TIMEOUT_S)))
        dist.barrier()  # every rank has joined: from here on, one that stops answering is a fault
        dist.distributed_c10d._set_pg_timeout(timedelta(seconds=timeout_s))  # no public setter
        # monitored_barrier exists on gloo only; its own group keeps it apart from the training collectives
        set_barrier_monitor(dist.new_group(backend="gloo", timeout=timedelta(seconds=timeout_s)), timeout_s)
        logger.info(
            "process group: %s, rank %d of %d, device %s, timeout %g s",
            backend,
            get_rank(),
            get_world_size(),
            resolved,
            timeout_s,
        )
    return resolved


def destroy_distributed() -> None:
    """Destroy the default process group if there is one (the bundle's ``finalize``)."""
    set_barrier_monitor(None, None)
    if is_distributed():
        dist.destroy_process_group()


class RankSyncHandler:
    """The ranks meet at each epoch's end before validation and checkpointing; a missing rank is named.

    Attach it before the validation and checkpoint handlers (ignite runs an event's handlers in the order
    they were attached). Without a process group it does nothing. When a collective inside the run times
    out (gloo raises; a training step's all-reduce, validation's all-gather), the ranks that noticed meet
    for :data:`DIAGNOSIS_TIMEOUT_S` (at most the run's timeout) and the error names the rank that did not
    come; any other exception goes on unchanged.

    Args:
        timeout_s: seconds to wait; None: the run's ``distributed_timeout``.
    """

    def __init__(self, timeout_s: float | None = None) -> None:
        self.timeout_s = timeout_s

    def attach(self, engine: Any) -> None:
        """Meet at every ``EPOCH_COMPLETED`` of ``engine``."""
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_COMPLETED, self)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self.exception_raised)

    def __call__(self, engine: Any) -> None:
        barrier(f"at the end of epoch {engine.state.epoch} (before validation and checkpointing)", self.timeout_s)

    def exception_raised(self, engine: Any, exc: BaseException) -> None:
        """Re-raise ``exc``; a collective's timeout as a :class:`RankTimeoutError` naming the missing rank.

        Raises:
            RankTimeoutError: a collective timed out and a rank did not come to the diagnosis.
            BaseException: ``exc`` itself otherwise (ignite re-raises only when no handler is attached).
        """
        if is_distributed() and get_world_size() > 1 and is_timeout_error(exc):
            where = f"after a collective timed out in epoch {engine.state.epoch}, iteration {engine.state.iteration}"
            wait_s = min(DIAGNOSIS_TIMEOUT_S, self.timeout_s or monitor_timeout_s() or DIAGNOSIS_TIMEOUT_S)
            try:
                barrier(where, wait_s)
            except RankTimeoutError as named:
                raise named from exc
        raise exc


class FeaturesDistributedDataParallel(nn.parallel.DistributedDataParallel):
    """DDP around a :class:`FeaturesForward`: ``ddp(inputs, feature_hook=...)`` returns a :class:`MultimodalOutput`."""

    def forward(self, *args: Any, **kwargs: Any) -> MultimodalOutput:
        logits, features, head_input = super().forward(*args, **kwargs)
        return MultimodalOutput(logits=logits, features=list(features), head_input=head_input)


def ddp_wrap(module: nn.Module, device: str | torch.device | None = None, **kwargs: Any) -> nn.Module:
    """Wrap ``module`` in DDP for training; without a process group it is returned unchanged.

    A network with ``forward_features`` becomes ``FeaturesDistributedDataParallel(FeaturesForward(network))``,
    any other module (the auxiliary heads) plain DDP. DDP broadcasts rank 0's parameters and buffers when
    it is built, so every replica starts identical. Optimizers, checkpoints and validation keep using the
    bare module (:func:`unwrap`), which shares its parameters with the wrapper.

    Args:
        module: the network or the auxiliary heads, already on ``device``.
        device: the rank's device (CUDA devices become ``device_ids``); the module's when None.
        kwargs: more ``DistributedDataParallel`` arguments (e.g. ``find_unused_parameters=True`` for a
            balancer that skips an encoder in some steps).

    Returns:
        The DDP wrapper, or ``module`` itself in a single process.
    """
    if not is_distributed():
        return module
    device = torch.device(device) if device is not None else next(module.parameters()).device
    if device.type == "cuda":
        kwargs = {"device_ids": [device], "output_device": device, **kwargs}
    if hasattr(module, "forward_features"):
        return FeaturesDistributedDataParallel(FeaturesForward(module), **kwargs)
    return nn.parallel.DistributedDataParallel(module, **kwargs)


def main_process_first(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``fn`` on rank 0 first, then on the other ranks (e.g. to generate phantoms once)."""
    where = f"after rank 0's {getattr(fn, '__name__', 'work')}"
    if is_main_process():
        result = fn(*args, **kwargs)
        barrier(where, data_barrier_timeout_s())
        return result
    barrier(where, data_barrier_timeout_s())
    return fn(*args, **kwargs)


def main_process_handlers(handlers: Sequence[Any] | None) -> list[Any]:
    """``handlers`` on rank 0; on the other ranks, without MONAI's ``StatsHandler`` and TensorBoard handlers.

    Those write unconditionally; this package's handlers gate themselves (the checkpoint saver must run
    on every rank: it gathers each rank's RNG states), and the others (LR schedule, validation) must run
    everywhere.
    """
    handlers = list(handlers or [])
    if is_main_process():
        return handlers
    from monai.handlers import StatsHandler
    from monai.handlers.tensorboard_handlers import TensorBoardHandler

    return [h for h in handlers if not isinstance(h, StatsHandler | TensorBoardHandler)]


class _NullSummaryWriter:
    """A ``SummaryWriter`` stand-in for ranks > 0: every method does nothing."""

    def __getattr__(self, name: str) -> Callable[..., None]:
        if name.startswith("__"):
            raise AttributeError(name)
        return lambda *args, **kwargs: None


def main_process_summary_writer(log_dir: str | os.PathLike, **kwargs: Any) -> Any:
    """A ``SummaryWriter`` on rank 0 and a no-op stand-in elsewhere, so a run has one event file.

    Rank 0's is a :class:`~brats_cggm.engine.summary_writer.DeferredSummaryWriter` (nothing written until its
    first event), so building it while parsing the bundle writes nothing.
    """
    if not is_main_process():
        return _NullSummaryWriter()
    from brats_cggm.engine.summary_writer import DeferredSummaryWriter

    return DeferredSummaryWriter(log_dir=str(log_dir), **kwargs)


def quiet_non_main_logging(level: int = logging.WARNING) -> None:
    """On ranks > 0, drop log records below ``level`` (warnings and errors still show)."""
    if not is_main_process():
        logging.disable(level - 1)


def validation_sampler(dataset: Any) -> Any:
    """``monai.data.DistributedSampler(even_divisible=False)``: each validation case on exactly one rank.

    MONAI's metrics all-gather the per-case scores (uneven shards included), so the reduced metric is
    that of the whole validation set, without the padded duplicates of an evenly divisible sampler.
    Every rank needs at least one case: with fewer cases than ranks the sampler pads, with a warning.
    """
    from monai.data import DistributedSampler

    even = len(dataset) < get_world_size()
    if even:
        warnings.warn(
            f"{len(dataset)} validation case(s) for {get_world_size()} ranks: padded with duplicates, "
            "which bias the validation metrics",
            stacklevel=2,
        )
    return DistributedSampler(dataset=dataset, even_divisible=even, shuffle=False)
