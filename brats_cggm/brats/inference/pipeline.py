"""A folder of cases as a pipeline: loading ahead in workers, the network in the main process, writing behind.

Three stages run at the same time on different cases, each in case order:

1. **load** (read, check, preprocess) in the worker processes of a ``torch.utils.data.DataLoader`` over the
   case list: while the network runs on case ``k``, the workers prepare cases ``k + 1``, ``k + 2``, ...;
2. **predict** (the network) in the calling process, the only one that touches the compute device (CUDA is never
   initialised in a worker);
3. **finish** (inversion, post-processing, writing) in one background thread fed through a bounded queue.

Memory stays bounded: a worker prepares at most ``prefetch`` cases ahead and the writer's queue holds at most
``queue_size``. A stage may end a case early by returning :class:`Finished` (a failure, a skipped case); an
exception raised by a stage is turned into the case's result by ``describe`` where it was raised, so that it
crosses process boundaries as plain data, and the other cases go on. Results come back in case order.

With ``workers=0`` every stage runs in the calling process, one case after the other: the per-case loop, the
reference the pipeline's outputs are tested against.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import torch
from monai.data import MetaTensor
from monai.utils import TraceKeys

__all__ = ["DEFAULT_WORKERS", "STAGES", "Finished", "detach_item", "run_pipeline", "worker_threads"]

#: The stages of a case whose seconds ``brats-cggm-infer`` and the benchmark report, in their order: reading and
#: decompressing the files, their checks, preprocessing, the network (sliding window), inversion to the input's
#: grid with threshold and labels, post-processing rules, writing.
STAGES = ("read", "check", "preprocess", "network", "invert", "postprocess", "write")

#: Loader workers of ``brats-cggm-infer`` by default. One worker hides reading, checking and preprocessing behind
#: the network whenever the network is the slower stage, as it always is on a CPU (2 cores: 2.4 s of reading
#: and preprocessing against about a minute of sliding window per 240x240x155 case, docs/performance.md), for one
#: core and one case of memory; more workers only pay where preprocessing outlasts the network (a fast GPU) and
#: cores are free.
DEFAULT_WORKERS = 1

T = TypeVar("T")
R = TypeVar("R")

_STOP = object()


@dataclass
class Finished(Generic[R]):
    """A case's final result reached before its last stage (a failure, a skipped case): later stages pass it on.

    Attributes:
        result: the result.
    """

    result: R


def worker_threads(workers: int, cpu_count: int | None = None) -> int:
    """Torch threads of each loader worker: the cores left beside the main process, shared, at least one.

    Args:
        workers: loader workers.
        cpu_count: cores; ``os.cpu_count()`` when None.

    Returns:
        The thread count.
    """
    cores = cpu_count or os.cpu_count() or 1
    return max(1, (cores - 1) // max(workers, 1))


def detach_item(data: Mapping[Any, Any], chain_key: str) -> dict[Any, Any]:
    """``data`` ready to leave its process: without its transform chain, its recorded operations without ids.

    MONAI checks, when inverting, that each recorded operation was applied by the very transform object that
    inverts it (its ``id``). An item prepared in a loader worker is inverted in another process by a chain built
    again from the same settings; its operations get :data:`monai.utils.TraceKeys.NONE` as id, MONAI's way to
    skip that check. The chain (which may hold the images it read) stays behind.

    Args:
        data: an item from the preprocessing.
        chain_key: the key of the chain in ``data``.

    Returns:
        A new item (the tensors are shared).
    """
    out = {k: v for k, v in data.items() if k != chain_key}
    for value in out.values():
        if isinstance(value, MetaTensor):
            _drop_ids(value.applied_operations)
    return out


def _drop_ids(operations: Any) -> None:
    if isinstance(operations, Mapping):
        if TraceKeys.ID in operations:
            operations[TraceKeys.ID] = TraceKeys.NONE  # type: ignore[index]
        for value in operations.values():
            _drop_ids(value)
    elif isinstance(operations, list | tuple):
        for value in operations:
            _drop_ids(value)


class _CaseLoader(torch.utils.data.Dataset):
    """The load stage as a data set: item ``i`` is ``load(items[i])``, or its :class:`Finished` failure."""

    def __init__(
        self, items: Sequence[Any], load: Callable[[Any], Any], describe: Callable[[Any, Exception], Any]
    ) -> None:
        self.items = items
        self.load = load
        self.describe = describe

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Any:
        return _run_stage(self.load, self.describe, self.items[index], self.items[index])


def _run_stage(stage: Callable[[T], Any], describe: Callable[[Any, Exception], Any], item: Any, value: T) -> Any:
    if isinstance(value, Finished):
        return value
    try:
        return stage(value)
    except Exception as exc:  # one case's failure must not stop the folder
        return Finished(describe(item, exc))


def _as_is(value: Any) -> Any:
    return value


class _ThreadSetter:
    """``worker_init_fn``: a fixed torch thread count in each worker (picklable, for any start method)."""

    def __init__(self, threads: int) -> None:
        self.threads = threads

    def __call__(self, worker_id: int) -> None:
        torch.set_num_threads(self.threads)


def run_pipeline(
    items: Sequence[Any],
    load: Callable[[Any], Any],
    predict: Callable[[Any], Any],
    finish: Callable[[Any], R],
    describe: Callable[[Any, Exception], R],
    workers: int = DEFAULT_WORKERS,
    threads_per_worker: int | None = None,
    prefetch: int = 1,
    queue_size: int = 2,
) -> Iterator[R]:
    """Run ``load``, ``predict`` and ``finish`` over ``items``, overlapping them across items; results in order.

    Args:
        items: the cases.
        load: item to loaded case, in the loader workers (must not touch CUDA; its output crosses a process
            boundary: plain data and tensors, see :func:`detach_item`).
        predict: loaded case to predicted case, in the calling process.
        finish: predicted case to the item's result, in the writer thread.
        describe: ``(item, exception)`` to the item's result, for an exception raised by a stage (in the process
            that raised it: the result must be picklable).
        workers: loader worker processes; 0 runs the three stages in the calling process, one item after the
            other.
        threads_per_worker: torch threads of each worker; None: :func:`worker_threads`.
        prefetch: items each worker prepares ahead.
        queue_size: predicted items waiting for the writer (each holds its whole-volume output).

    Yields:
        Each item's result (from ``finish``, from a stage's :class:`Finished`, or from ``describe``), in the
        order of ``items``.

    Raises:
        ValueError: a negative ``workers``, or ``prefetch``/``queue_size`` below 1.
    """
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    if prefetch < 1 or queue_size < 1:
        raise ValueError(f"prefetch and queue_size must be >= 1, got {prefetch} and {queue_size}")
    if workers == 0:
        for item in items:
            value = _run_stage(load, describe, item, item)
            value = _run_stage(predict, describe, item, value)
            value = _run_stage(finish, describe, item, value)
            yield value.result if isinstance(value, Finished) else value
        return
    threads = threads_per_worker or worker_threads(workers)
    loader = torch.utils.data.DataLoader(
        _CaseLoader(items, load, describe),
        batch_size=None,  # one case at a time, as the stage returned it
        shuffle=False,
        num_workers=workers,
        collate_fn=_as_is,
        prefetch_factor=prefetch,
        worker_init_fn=_ThreadSetter(threads),
        persistent_workers=False,
    )
    pending: queue.Queue = queue.Queue(maxsize=queue_size)
    results: queue.Queue = queue.Queue()
    broken: list[BaseException] = []

    def write() -> None:
        while True:
            entry = pending.get()
            if entry is _STOP:
                return
            if broken:  # drained, so that the main thread never blocks on a full queue
                continue
            item, value = entry
            try:
                value = _run_stage(finish, describe, item, value)
            except BaseException as exc:  # not a case's failure (describe failed, an interrupt): the run's
                broken.append(exc)
                continue
            results.put(value.result if isinstance(value, Finished) else value)

    writer = threading.Thread(target=write, name="case-writer", daemon=True)
    writer.start()
    done = 0
    try:
        for item, value in zip(items, loader, strict=True):
            value = _run_stage(predict, describe, item, value)
            pending.put((item, value))  # blocks while the writer is queue_size cases behind
            while not broken:
                try:
                    yield results.get_nowait()
                except queue.Empty:
                    break
                done += 1
            if broken:
                raise broken[0]
    finally:
        pending.put(_STOP)
        writer.join()
    if broken:
        raise broken[0]
    while done < len(items):
        yield results.get_nowait()
        done += 1
