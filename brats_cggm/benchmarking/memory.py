"""Peak memory, measured in a fresh subprocess per configuration so that each peak is its own.

On CPU the kernel's peak resident set size ``VmHWM`` of ``/proc/self/status`` is read: after setup the peak
is reset (``/proc/self/clear_refs``) and the current ``VmRSS`` kept as the baseline, so ``step_peak_bytes``
is what the training steps add on top of the process with its model, optimizers and batch, and
``peak_rss_bytes`` the whole process. (``tracemalloc`` does not see torch's allocations.) On CUDA it is
``torch.cuda.max_memory_allocated``.

The subprocess protocol: :func:`run_worker` starts ``python -m brats_cggm.benchmarking --worker KIND
PAYLOAD`` (PAYLOAD a JSON object); the worker prints its result as one JSON line on stdout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

import brats_cggm
from brats_cggm.benchmarking.config import StepSpec
from brats_cggm.benchmarking.steps import build_trainer, synthetic_batch
from brats_cggm.benchmarking.timing import run_block

__all__ = ["WORKER_MODULE", "measure_step_memory", "memory_worker", "peak_rss", "proc_status", "reset_peak_rss"]

#: The module run by ``python -m`` in a worker subprocess (its ``__main__`` dispatches ``--worker``).
WORKER_MODULE = "brats_cggm.benchmarking"


def proc_status(field: str) -> int | None:
    """A size field of ``/proc/self/status`` (e.g. ``"VmRSS"``) in bytes; None without ``/proc``."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Restart the kernel's peak resident size ``VmHWM`` from the current one; False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss() -> int | None:
    """This process's peak resident size in bytes (``VmHWM``, or ``ru_maxrss`` without ``/proc``)."""
    peak = proc_status("VmHWM")
    if peak is None:  # ru_maxrss is in kB on Linux, in bytes on macOS
        import resource

        scale = 1 if sys.platform == "darwin" else 1024
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    return peak


def memory_worker(spec: StepSpec, steps: int) -> dict[str, Any]:
    """Run ``steps`` training steps of ``spec`` in this (fresh) process and report its peak memory.

    Args:
        spec: the configuration.
        steps: steps to run.

    Returns:
        See :func:`measure_step_memory`.
    """
    batch = synthetic_batch(spec)
    trainer = build_trainer(spec, [batch] * steps)
    device = torch.device(spec.device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    reset = reset_peak_rss()
    # read after the reset: RSS may shrink in between, and the peak restarts from the RSS at reset time
    baseline = proc_status("VmRSS")
    run_block(trainer)
    out: dict[str, Any] = {"peak_rss_bytes": peak_rss(), "baseline_rss_bytes": baseline, "steps": steps}
    if reset and baseline is not None and out["peak_rss_bytes"] is not None:
        out["step_peak_bytes"] = max(0, out["peak_rss_bytes"] - baseline)
    if device.type == "cuda":
        out["cuda_peak_bytes"] = torch.cuda.max_memory_allocated()
    return out


def run_worker(kind: str, payload: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
    """Run a worker in a fresh subprocess and parse its JSON answer.

    Args:
        kind: ``"memory"`` (:func:`memory_worker`) or ``"inference"``
            (:func:`~brats_cggm.benchmarking.sections.inference.inference_worker`).
        payload: the worker's arguments, JSON-serialisable.
        timeout: seconds before the subprocess is killed; None = no limit.

    Returns:
        The worker's result.

    Raises:
        RuntimeError: the worker failed or printed no result (the message ends with its last lines).
    """
    cmd = [sys.executable, "-m", WORKER_MODULE, "--worker", kind, json.dumps(payload)]
    # the worker must import this very package, installed or not
    root = str(Path(brats_cggm.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    if kind == "memory":
        # A fixed mmap threshold returns every freed tensor to the kernel, so the peak RSS follows the
        # peak of live allocations; glibc's default sliding threshold keeps freed blocks in the heap and
        # made the same step's peak vary by about ±8 MiB (5 %) between runs.
        env.setdefault("MALLOC_MMAP_THRESHOLD_", str(64 * 1024))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = " ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise RuntimeError(f"benchmark worker {kind} failed (exit {proc.returncode}): {tail}")
    return json.loads(lines[-1])


def measure_step_memory(spec: StepSpec, steps: int = 2) -> dict[str, Any]:
    """Peak memory of ``steps`` training steps of ``spec``, in a fresh subprocess.

    Args:
        spec: the configuration.
        steps: steps to run (the first one allocates the optimizer state).

    Returns:
        ``peak_rss_bytes`` (whole process), ``baseline_rss_bytes`` (after setup), ``step_peak_bytes``
        (peak above the baseline, where the kernel lets the peak be reset) and, on CUDA,
        ``cuda_peak_bytes``.
    """
    return run_worker("memory", {"spec": spec.to_json(), "steps": steps})
