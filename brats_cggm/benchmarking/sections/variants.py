"""Speed options: the base training step with AMP, ``channels_last_3d`` and ``torch.compile``."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from brats_cggm.benchmarking.config import BenchmarkConfig, StepSpec
from brats_cggm.benchmarking.timing import time_spec

__all__ = ["VARIANT_OPTIONS", "variant_spec", "variants_benchmark"]

#: The options a variant name combines with ``+`` (``"default"`` is none of them).
VARIANT_OPTIONS = ("bf16", "fp16", "channels_last", "compile")


def variant_spec(base: StepSpec, variant: str) -> StepSpec:
    """The step ``base`` with the speed options named by ``variant``.

    Args:
        base: the configuration.
        variant: ``"default"`` or options of :data:`VARIANT_OPTIONS` joined by ``+``, e.g.
            ``"bf16+channels_last"``.

    Returns:
        ``base`` with ``amp``, ``channels_last`` and ``compile`` set.

    Raises:
        ValueError: an option is unknown.
    """
    parts = set(variant.split("+")) - {"default"}
    unknown = parts - set(VARIANT_OPTIONS)
    if unknown:
        raise ValueError(f"unknown variant option(s) {sorted(unknown)} in {variant!r}")
    amp = "bf16" if "bf16" in parts else "fp16" if "fp16" in parts else None
    return dataclasses.replace(base, amp=amp, channels_last="channels_last" in parts, compile="compile" in parts)


def variants_benchmark(config: BenchmarkConfig, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Step time of the base configuration with speed options (AMP, channels_last_3d, torch.compile).

    Args:
        config: the run's configuration (``base``, ``variants``, ``rounds``, ``warmup``).
        log: progress messages.

    Returns:
        One entry per variant: its name, ``step_time_s``, ``speedup`` over ``"default"`` (and the CUDA peak
        on GPU), or its ``error``.
    """
    results = []
    for variant in config.variants:
        log(f"  variant {variant}")
        try:
            spec = variant_spec(config.base, variant)
            # compiling takes the first steps; give it more warm-up
            entry = {"variant": variant, **time_spec(spec, config.warmup + (2 if spec.compile else 0), config.rounds)}
        except Exception as exc:
            entry = {"variant": variant, "error": f"{type(exc).__name__}: {exc}"}
        results.append(entry)
    reference = next((r["step_time_s"] for r in results if r["variant"] == "default" and "step_time_s" in r), None)
    for r in results:
        if reference and "step_time_s" in r:
            r["speedup"] = reference / r["step_time_s"]
    return results
