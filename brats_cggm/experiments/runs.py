"""Training runs of a bundle: one subprocess per balancer overlay and seed, under one budget.

Each run is a separate ``python -m monai.bundle run`` process (the exact command a user would type), so
runs cannot leak state into each other; each writes ``metrics.json``, which is all this module reads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

__all__ = ["run_comparison", "short_run_overrides", "train_run"]


def short_run_overrides(method: str, max_epochs: int) -> dict[str, Any]:
    """Bundle overrides that fit ``method``'s epoch schedule into ``max_epochs`` epochs.

    The overrides are the balancer's :meth:`~brats_cggm.core.balancer.Balancer.short_run_kwargs` as
    ``balancer#<argument>`` keys. OPM's warm-up becomes ``max_epochs // 10`` epochs (none below 10
    epochs; the paper: 5 of about 50), and Re-learning diagnoses at ``max_epochs // 3`` with two
    re-initialisations (none in a one-epoch run; the paper: every 15–20 epochs, 2–3 times).

    Args:
        method: a registered balancer name.
        max_epochs: the run's length in epochs.

    Returns:
        ``{"balancer#<argument>": value}``; empty for a method without an epoch schedule.

    Raises:
        ValueError: ``method`` is not a registered balancer.
    """
    from brats_cggm.balancing import balancer_class

    return {f"balancer#{key}": value for key, value in balancer_class(method).short_run_kwargs(max_epochs).items()}


def train_run(
    config_files: Sequence[str | Path],
    output_dir: str | Path,
    overrides: Mapping[str, Any] | None = None,
    log_file: str | Path | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """Run one training bundle in a subprocess and return its ``metrics.json``.

    Args:
        config_files: the bundle config and its overlays, in order.
        output_dir: the run's ``output_dir`` (created).
        overrides: ``--key value`` overrides (values are passed as JSON so lists and dicts work).
        log_file: where the run's output goes (``output_dir/train.log`` by default).
        threads: CPU threads of the run (``OMP_NUM_THREADS``); the environment's setting when None.

    Returns:
        The run's ``metrics.json``.

    Raises:
        RuntimeError: the run failed; the message names its log file.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    files = "[" + ",".join(repr(str(f)) for f in config_files) + "]"
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", files, "--output_dir", str(output_dir)]
    for key, value in (overrides or {}).items():
        command += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    log_path = Path(log_file) if log_file else output_dir / "train.log"
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    with open(log_path, "w") as log:
        completed = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False, env=env)
    if completed.returncode != 0:
        raise RuntimeError(f"training failed (exit {completed.returncode}); see {log_path}")
    return json.loads((output_dir / "metrics.json").read_text())


def run_comparison(
    bundle_config: str | Path,
    balancer_overlays: Mapping[str, str | Path],
    seeds: Sequence[int],
    out_dir: str | Path,
    overrides: Mapping[str, Any] | None = None,
    jobs: int = 1,
    method_overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Train every balancer with every seed, same budget; one row per run.

    Args:
        bundle_config: the bundle's ``train.yaml``.
        balancer_overlays: method name → its overlay (``configs/balancers/<name>.yaml``).
        seeds: the seeds (network initialisation and sampling; the data set is the same).
        out_dir: each run goes to ``out_dir/<method>/seed<k>``.
        overrides: shared overrides (e.g. ``max_epochs``, ``dataset_dir``).
        jobs: runs trained at the same time. Above 1 the runs share the machine, so their step times are
            not comparable; the data set must exist beforehand (concurrent runs would all generate it).
            Each run then gets ``cpu_count // jobs`` threads unless ``OMP_NUM_THREADS`` is set: with
            torch's default of one thread per core, two runs on two cores each took 3.4 times as long
            per step as one run alone.
        method_overrides: method → overrides of that method's runs only, applied after ``overrides``
            (e.g. :func:`short_run_overrides`).

    Returns:
        Rows with ``method``, ``seed`` and the run's ``metrics.json`` entries, in method-then-seed order.
    """
    runs = [(method, overlay, seed) for method, overlay in balancer_overlays.items() for seed in seeds]
    threads = None
    if jobs > 1 and "OMP_NUM_THREADS" not in os.environ:
        threads = max(1, (os.cpu_count() or 1) // jobs)

    def train(run: tuple[str, str | Path, int]) -> dict[str, Any]:
        method, overlay, seed = run
        run_dir = Path(out_dir) / method / f"seed{seed}"
        run_overrides = {**(overrides or {}), **(method_overrides or {}).get(method, {}), "seed": seed}
        metrics = train_run([bundle_config, overlay], run_dir, run_overrides, threads=threads)
        return {"method": method, "seed": seed, **metrics}

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(train, runs))
