"""Balancer overhead: step time and peak memory of every balancer on the same network, patch and batch."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch

from brats_cggm.benchmarking.config import BenchmarkConfig
from brats_cggm.benchmarking.memory import measure_step_memory
from brats_cggm.benchmarking.steps import build_trainer, synthetic_batch
from brats_cggm.benchmarking.timing import alternate, paired_ratio, summarize

__all__ = ["balancer_benchmark"]


def balancer_benchmark(config: BenchmarkConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Step time and peak memory of every balancer on the same network, patch and batch.

    Balancers run in alternating blocks (joint, cggm, ..., joint, cggm, ...); a balancer's ``time_ratio`` is
    :func:`~brats_cggm.benchmarking.timing.paired_ratio` against joint. Balancers whose constructor or step
    fails are reported with their ``error`` instead of numbers.

    Args:
        config: the run's configuration (``base``, ``balancers``, ``warmup``, ``rounds``, ``block``,
            ``memory``, ``memory_steps``).
        log: progress messages.

    Returns:
        ``{"per_balancer": {name: {...}}, "cggm_time_ratio", "cggm_mem_ratio", "cggm_rss_ratio"}`` (ratios
        CGGM/joint; None where a side is missing) and each balancer's ``time_ratio``/``mem_ratio`` to joint.
    """
    from brats_cggm.balancing import available_balancers

    names = list(config.balancers) if config.balancers is not None else available_balancers()
    # joint first: the reference of every ratio
    names = sorted(dict.fromkeys(names), key=lambda n: (n != "joint", n != "cggm", n))
    batch = synthetic_batch(config.base)
    results: dict[str, dict[str, Any]] = {}
    trainers: dict[str, Any] = {}
    for name in names:
        spec = dataclasses.replace(config.base, balancer=name)
        try:
            trainers[name] = build_trainer(spec, [batch] * config.block)
        except Exception as exc:  # a balancer that cannot be built here is reported, not fatal
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
            log(f"  {name}: cannot be constructed: {type(exc).__name__}: {exc}")
    log(f"  timing {', '.join(trainers)}: {config.rounds} alternating rounds of {config.block} step(s)")
    errors: dict[str, str] = {}
    try:
        times = alternate(trainers, config.warmup, config.rounds, errors)
    finally:
        trainers.clear()
    for name, message in errors.items():
        results[name] = {"error": f"training step failed: {message}"}
        log(f"  {name}: training step failed: {message}")
    for name, steps in times.items():
        results[name] = summarize(steps)
    results = {name: results[name] for name in names}
    if config.memory:
        for name in names:
            if "error" in results[name]:
                continue
            log(f"  memory of {name} (subprocess, {config.memory_steps} steps)")
            try:
                results[name].update(
                    measure_step_memory(dataclasses.replace(config.base, balancer=name), config.memory_steps)
                )
            except Exception as exc:
                results[name]["memory_error"] = str(exc)
                log(f"  {name}: memory measurement failed: {exc}")

    def ratio(name: str, key: str) -> float | None:
        a, b = results.get(name, {}).get(key), results.get("joint", {}).get(key)
        return a / b if a is not None and b else None

    mem_key = "cuda_peak_bytes" if torch.device(config.base.device).type == "cuda" else "step_peak_bytes"
    for name, entry in results.items():
        if "error" not in entry:
            both = name in times and "joint" in times
            entry["time_ratio"] = paired_ratio(times[name], times["joint"], config.block) if both else None
            entry["mem_ratio"] = ratio(name, mem_key)
    return {
        "per_balancer": results,
        "cggm_time_ratio": results.get("cggm", {}).get("time_ratio"),
        "cggm_mem_ratio": ratio("cggm", mem_key),
        "cggm_rss_ratio": ratio("cggm", "peak_rss_bytes"),
        "mem_ratio_measure": mem_key,
    }
