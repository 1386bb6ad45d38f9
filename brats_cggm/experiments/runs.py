"""Training runs of a bundle: one subprocess per balancer overlay and seed, under one budget.

Each run is a separate ``python -m monai.bundle run`` process (the exact command a user would type), so
runs cannot leak state into each other; each writes ``metrics.json``, which is all this module reads. A run
whose ``metrics.json`` exists can be skipped (``resume``), so a long comparison can span several sessions.
"""

from __future__ import annotations

import functools
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["PlannedRun", "run_comparison", "short_run_overrides", "train_planned_runs", "train_run"]

#: What a finished run leaves in its folder.
METRICS_FILE = "metrics.json"


def short_run_overrides(method: str, max_epochs: int) -> dict[str, Any]:
    """Bundle overrides that fit ``method``'s epoch schedule into ``max_epochs`` epochs.

    The overrides are the balancer's :meth:`~brats_cggm.core.balancer.Balancer.short_run_kwargs` as
    ``balancer#<argument>`` keys. OPM's warm-up becomes ``max_epochs // 10`` epochs (none below 10
    epochs; the paper: 5 of about 50), and Re-learning diagnoses at ``max_epochs // 3`` with two
    re-initialisations (none in a one-epoch run; the paper: every 15–20 epochs, 2–3 times).

    Args:
        method: a method name: a registered balancer, or an overlay that is not one (``dropout``: joint
            training with the missing-modality option, no epoch schedule).
        max_epochs: the run's length in epochs.

    Returns:
        ``{"balancer#<argument>": value}``; empty for a method without an epoch schedule.

    Raises:
        ValueError: ``method`` is neither a registered balancer nor an overlay of ``configs/balancers``.
    """
    from brats_cggm.balancing import available_balancers, balancer_class
    from brats_cggm.core import resources

    if method not in available_balancers():
        if not resources.config_path("balancers", f"{method}.yaml").is_file():
            raise ValueError(f"unknown method {method!r}: no balancer and no overlay configs/balancers/{method}.yaml")
        return {}
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
        log_file: where the run's output goes (``output_dir/train.log`` by default), appended after a line with
            the time and the command.
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
    # Appended: a resumed run keeps the log of its earlier part (its validations before the interruption).
    with open(log_path, "a") as log:
        log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(command)}\n")
        log.flush()
        completed = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False, env=env)
    if completed.returncode != 0:
        raise RuntimeError(f"training failed (exit {completed.returncode}); see {log_path}")
    return json.loads((output_dir / "metrics.json").read_text())


@dataclass(frozen=True)
class PlannedRun:
    """One training run of a comparison.

    Attributes:
        name: the run's group (a table row), also its folder under the comparison's folder.
        seed: its seed; the run goes to ``<out_dir>/<name>/seed<seed>``.
        config_files: the bundle config and its overlays, in order.
        overrides: bundle overrides (``seed`` is added).
        info: more entries of the run's row (e.g. the balancer, the optimizer).
    """

    name: str
    seed: int
    config_files: tuple[str | Path, ...]
    overrides: Mapping[str, Any] = field(default_factory=dict)
    info: Mapping[str, Any] = field(default_factory=dict)

    def run_dir(self, out_dir: str | Path) -> Path:
        """The run's ``output_dir``."""
        return Path(out_dir) / self.name / f"seed{self.seed}"


def _default_threads(jobs: int) -> int | None:
    if jobs > 1 and "OMP_NUM_THREADS" not in os.environ:
        return max(1, (os.cpu_count() or 1) // jobs)
    return None


def train_planned_runs(
    planned: Sequence[PlannedRun],
    out_dir: str | Path,
    jobs: int = 1,
    resume: bool = False,
    on_finished: Callable[[PlannedRun, dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Train the planned runs; one row per run.

    Args:
        planned: the runs.
        out_dir: the comparison's folder.
        jobs: runs trained at the same time. Above 1 the runs share the machine, so their step times are not
            comparable; the data set must exist beforehand (concurrent runs would all generate it).
        resume: a run whose ``metrics.json`` exists is not trained again; its row is read from that file. A run
            without one is continued from its ``models/checkpoint.pt`` (bundle ``resume: true``) or, without a
            checkpoint, trained again (bundle ``overwrite: true``).
        on_finished: called in the calling thread with each run and its row as soon as the run is done (in the
            order they finish), e.g. to save partial reports; with one job, before the next run starts.

    Returns:
        Rows with ``method`` (the run's name), ``seed``, the run's ``info`` and its ``metrics.json`` entries, in
        the order of ``planned``.

    Raises:
        RuntimeError: after every run was tried, if some failed (naming them and their logs); the others'
            rows have been passed to ``on_finished``.
    """
    threads = _default_threads(jobs)

    def train(run: PlannedRun) -> dict[str, Any]:
        run_dir = run.run_dir(out_dir)
        overrides = {**run.overrides, "seed": run.seed}
        if resume:
            if (run_dir / METRICS_FILE).is_file():
                return {
                    "method": run.name,
                    "seed": run.seed,
                    **run.info,
                    **json.loads((run_dir / METRICS_FILE).read_text()),
                }
            # An interrupted run goes on from its last checkpoint; one that never saved a checkpoint starts again
            # (the bundle would refuse the folder of its partial files otherwise).
            checkpoint = run_dir / "models" / "checkpoint.pt"
            overrides.update({"resume": True} if checkpoint.is_file() else {"overwrite": True})
        metrics = train_run(run.config_files, run_dir, overrides, threads=threads)
        return {"method": run.name, "seed": run.seed, **run.info, **metrics}

    rows: list[dict[str, Any] | None] = [None] * len(planned)
    failures = []

    def collect(i: int, result: Callable[[], dict[str, Any]]) -> None:
        try:
            row = result()
        except RuntimeError as exc:  # the other runs go on; a resumed comparison retries this one
            failures.append(f"{planned[i].run_dir(out_dir)}: {exc}")
            return
        rows[i] = row
        if on_finished is not None:
            on_finished(planned[i], row)

    if jobs <= 1:  # on_finished's work never shares the machine with a run whose step time is measured
        for i, run in enumerate(planned):
            collect(i, functools.partial(train, run))
    else:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = {pool.submit(train, run): i for i, run in enumerate(planned)}
            for future in as_completed(futures):
                collect(futures[future], future.result)
    if failures:
        raise RuntimeError(f"{len(failures)} of {len(planned)} run(s) failed: " + "; ".join(failures))
    return [row for row in rows if row is not None]


def run_comparison(
    bundle_config: str | Path,
    balancer_overlays: Mapping[str, str | Path],
    seeds: Sequence[int],
    out_dir: str | Path,
    overrides: Mapping[str, Any] | None = None,
    jobs: int = 1,
    method_overrides: Mapping[str, Mapping[str, Any]] | None = None,
    resume: bool = False,
    on_finished: Callable[[PlannedRun, dict[str, Any]], None] | None = None,
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
        resume: skip the runs whose ``metrics.json`` exists (see :func:`train_planned_runs`).
        on_finished: called with each run and its row as soon as it is done.

    Returns:
        Rows with ``method``, ``seed`` and the run's ``metrics.json`` entries, in method-then-seed order.
    """
    planned = [
        PlannedRun(
            method, seed, (bundle_config, overlay), {**(overrides or {}), **(method_overrides or {}).get(method, {})}
        )
        for method, overlay in balancer_overlays.items()
        for seed in seeds
    ]
    return train_planned_runs(planned, out_dir, jobs, resume, on_finished)
