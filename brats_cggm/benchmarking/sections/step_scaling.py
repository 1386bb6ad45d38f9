"""The ``step_scaling`` section: training-step time against the patch size and against the number of modalities."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from brats_cggm.benchmarking.config import MODALITIES, BenchmarkConfig
from brats_cggm.benchmarking.timing import time_spec

__all__ = ["step_scaling_benchmark"]


def step_scaling_benchmark(config: BenchmarkConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Step time (base balancer, CGGM) against the patch size and against the number of modalities (base patch).

    Args:
        config: the run's configuration (``base``, ``scaling_patches``, ``scaling_modalities``,
            ``scaling_reps``, ``scaling_warmup``).
        log: progress messages.

    Returns:
        ``{"patch": [...], "modalities": [...], "balancer"}``, one entry per point with ``step_time_s`` (and
        the CUDA peak on GPU).
    """
    out: dict[str, Any] = {"patch": [], "modalities": [], "balancer": config.base.balancer}
    for patch in config.scaling_patches:
        log(f"  patch {'x'.join(map(str, patch))}")
        spec = dataclasses.replace(config.base, patch=tuple(patch))
        out["patch"].append({"patch": list(patch), **time_spec(spec, config.scaling_warmup, config.scaling_reps)})
    for count in config.scaling_modalities:
        log(f"  {count} modalities")
        spec = dataclasses.replace(config.base, modalities=MODALITIES[:count])
        out["modalities"].append({"modalities": count, **time_spec(spec, config.scaling_warmup, config.scaling_reps)})
    return out
