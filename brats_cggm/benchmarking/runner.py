"""One benchmark run: the chosen sections in order, collected into one report with its headline ratios."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from brats_cggm.benchmarking.config import TARGETS, BenchmarkConfig
from brats_cggm.benchmarking.report import environment
from brats_cggm.benchmarking.sections.balancers import balancer_benchmark
from brats_cggm.benchmarking.sections.data import data_pipeline_benchmark
from brats_cggm.benchmarking.sections.dataset_scale import dataset_scale_benchmark
from brats_cggm.benchmarking.sections.inference import inference_benchmark
from brats_cggm.benchmarking.sections.inference_settings import inference_settings_benchmark
from brats_cggm.benchmarking.sections.step_scaling import step_scaling_benchmark
from brats_cggm.benchmarking.sections.variants import variants_benchmark

__all__ = ["DEFAULT_SECTIONS", "SECTIONS", "run_benchmarks"]

#: The report's sections, in the order they run.
SECTIONS = ("balancers", "inference", "inference_settings", "data", "step_scaling", "variants", "dataset_scale")
#: The sections a run without ``--sections`` runs: the inference_settings sweep needs a trained model and is asked for.
DEFAULT_SECTIONS = tuple(s for s in SECTIONS if s != "inference_settings")

MEMORY_METHOD = {
    "cuda": "CUDA: torch.cuda.max_memory_allocated in a fresh subprocess per configuration",
    "cpu": "CPU: VmHWM of /proc/self/status in a fresh subprocess per configuration; "
    "step_peak_bytes = peak after setup (peak reset via /proc/self/clear_refs) minus VmRSS after setup",
}
TIMING_METHOD = (
    "median of per-step intervals between ignite ITERATION_COMPLETED events of "
    "BalancedTrainer.run(), configurations alternated in blocks"
)


def run_benchmarks(
    config: BenchmarkConfig,
    sections: Sequence[str] = DEFAULT_SECTIONS,
    work_dir: str | os.PathLike | None = None,
    log: Callable[[str], None] = print,
    on_section: Callable[[dict[str, Any]], object] | None = None,
) -> dict[str, Any]:
    """Run the benchmark sections and collect their results.

    Args:
        config: sizes and repetitions (see :func:`~brats_cggm.benchmarking.config.benchmark_config`).
        sections: which of :data:`SECTIONS` to run.
        work_dir: where a new scratch folder ``run_*`` is made and kept (a temporary one, removed afterwards,
            when None).
        log: progress messages.
        on_section: called with the report so far after each section (e.g. to save partial results).

    Returns:
        The report: ``meta``, ``config``, one entry per section, the headline ratios at the top level
        (``cggm_time_ratio``, ``cggm_mem_ratio``, ``infer_ratio``, ``load_ratio``), ``targets`` and
        ``targets_met``.

    Raises:
        ValueError: an unknown section.
        RuntimeError: the configuration asks for CUDA and none is available.
    """
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise ValueError(f"unknown section(s) {sorted(unknown)}; choose from {SECTIONS}")
    device = torch.device(config.base.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: no CUDA device is available")
    report: dict[str, Any] = {
        "meta": environment(device.type),
        "config": {
            **{k: v for k, v in dataclasses.asdict(config).items() if k != "base"},
            "base": config.base.to_json(),
            "memory_method": MEMORY_METHOD["cuda" if device.type == "cuda" else "cpu"],
            "timing_method": TIMING_METHOD,
        },
        "skipped": list(config.skipped),
    }
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if work_dir is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="brats_cggm_bench_")))
        else:
            # a new folder per run: earlier runs' data is neither reused nor overwritten
            Path(work_dir).mkdir(parents=True, exist_ok=True)
            work = Path(tempfile.mkdtemp(prefix="run_", dir=work_dir))
            report["work_dir"] = str(work)
        steps: list[tuple[str, Callable[[], Any]]] = [
            ("balancers", lambda: balancer_benchmark(config, log)),
            ("inference", lambda: inference_benchmark(config, work, log)),
            ("inference_settings", lambda: inference_settings_benchmark(config, work, log)),
            ("data", lambda: data_pipeline_benchmark(config, work, log)),
            ("step_scaling", lambda: step_scaling_benchmark(config, log)),
            ("variants", lambda: variants_benchmark(config, log)),
            ("dataset_scale", lambda: dataset_scale_benchmark(config, work, log)),
        ]
        for name, fn in steps:
            if name not in sections:
                continue
            log(f"[{name}]")
            t = time.perf_counter()
            report[name] = fn()
            report.setdefault("section_seconds", {})[name] = round(time.perf_counter() - t, 2)
            if on_section is not None:
                on_section(report)
    report["meta"]["total_seconds"] = round(time.perf_counter() - started, 2)
    headline = {
        "cggm_time_ratio": report.get("balancers", {}).get("cggm_time_ratio"),
        "cggm_mem_ratio": report.get("balancers", {}).get("cggm_mem_ratio"),
        "infer_ratio": report.get("inference", {}).get("infer_ratio"),
        "load_ratio": report.get("data", {}).get("load_ratio"),
    }
    report.update(headline)
    report["targets"] = dict(TARGETS)
    report["targets_met"] = {k: (None if v is None else v <= TARGETS[k]) for k, v in headline.items()}
    return report
