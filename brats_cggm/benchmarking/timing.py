"""Timing of training steps: per-step intervals, alternated blocks, medians and paired ratios.

A step's time is the interval between consecutive ignite ``ITERATION_COMPLETED`` events (the first one from
``EPOCH_STARTED``), so fetching the batch is inside it. Configurations compared with each other run in
alternating blocks, so that load from other processes on a shared machine hits every one alike.
"""

from __future__ import annotations

import itertools
import statistics
import time
from typing import Any

import torch

from brats_cggm.benchmarking.config import StepSpec
from brats_cggm.benchmarking.steps import build_trainer, synthetic_batch

__all__ = ["alternate", "paired_ratio", "run_block", "summarize", "sync", "time_spec"]


def sync(device: torch.device | str) -> None:
    """Wait for the device's queued work (CUDA kernels run asynchronously); nothing to wait for on CPU."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def run_block(trainer: Any) -> list[float]:
    """Run one epoch of ``trainer``.

    Args:
        trainer: a :class:`~brats_cggm.engine.trainer.BalancedTrainer` (one epoch per ``run()``).

    Returns:
        The seconds of each step (batch fetching included).
    """
    from ignite.engine import Events

    marks: list[float] = []

    def mark(engine: Any) -> None:
        sync(engine.state.device)
        marks.append(time.perf_counter())

    handles = [trainer.add_event_handler(Events.EPOCH_STARTED, mark)]
    handles.append(trainer.add_event_handler(Events.ITERATION_COMPLETED, mark))
    try:
        trainer.run()
    finally:
        for handle in handles:
            handle.remove()
    return [b - a for a, b in itertools.pairwise(marks)]


def alternate(
    trainers: dict[str, Any], warmup: int, rounds: int, errors: dict[str, str] | None = None
) -> dict[str, list[float]]:
    """Warm every trainer up, then run one epoch of each in turn, ``rounds`` times.

    Args:
        trainers: the trainers by name, in the order they take turns.
        warmup: untimed epochs of each trainer before the first round.
        rounds: timed rounds.
        errors: when given, a trainer whose step raises is dropped and its error kept here under its name;
            when None the exception propagates.

    Returns:
        The step times of each trainer that ran to the end, in seconds, rounds concatenated.
    """
    times: dict[str, list[float]] = {name: [] for name in trainers}
    active = dict(trainers)

    def run(name: str) -> list[float]:
        try:
            return run_block(active[name])
        except Exception as exc:
            if errors is None:
                raise
            errors[name] = f"{type(exc).__name__}: {exc}"
            del active[name], times[name]
            return []

    for name in list(active):
        for _ in range(warmup):
            if name in active:
                run(name)
    for _ in range(rounds):
        for name in list(active):
            steps = run(name)
            if name in active:
                times[name] += steps
    return times


def summarize(times: list[float]) -> dict[str, Any]:
    """The report entry of a list of step times: ``step_time_s`` (the median) and ``step_times_s`` (all)."""
    return {"step_time_s": statistics.median(times), "step_times_s": [round(t, 5) for t in times]}


def paired_ratio(times: list[float], reference: list[float], block: int) -> float | None:
    """Median over rounds of (this round's median step / the reference's median step in the same round).

    Pairing each round with the reference's round of the same moment cancels load drifting between rounds.

    Args:
        times: step times from :func:`alternate`, ``block`` per round.
        reference: the reference's step times from the same :func:`alternate` call.
        block: steps per round.

    Returns:
        The ratio, or None when no round is complete on both sides.
    """
    rounds = min(len(times), len(reference)) // block
    per_round = [
        statistics.median(times[i * block : (i + 1) * block])
        / statistics.median(reference[i * block : (i + 1) * block])
        for i in range(rounds)
    ]
    return statistics.median(per_round) if per_round else None


def time_spec(spec: StepSpec, warmup: int, reps: int) -> dict[str, Any]:
    """Time ``reps`` steps of ``spec`` on a synthetic batch after ``warmup`` untimed epochs of them.

    Args:
        spec: the configuration.
        warmup: untimed epochs (of ``reps`` steps each).
        reps: timed steps.

    Returns:
        :func:`summarize`'s entry, and on CUDA ``cuda_peak_bytes`` of the timed steps.
    """
    batch = synthetic_batch(spec)
    trainer = build_trainer(spec, [batch] * reps)
    for _ in range(warmup):
        run_block(trainer)
    device = torch.device(spec.device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    result = summarize(run_block(trainer))
    if device.type == "cuda":
        result["cuda_peak_bytes"] = torch.cuda.max_memory_allocated()
    del trainer
    return result
