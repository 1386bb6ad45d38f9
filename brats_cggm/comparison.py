"""Train a bundle with several balancer overlays and seeds under one budget, and tabulate the results.

Each run is a separate ``python -m monai.bundle run`` process (the exact command a user would type), so
runs cannot leak state into each other; each writes ``metrics.json``, which is all this module reads.
"""

from __future__ import annotations

import csv
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

__all__ = ["markdown_table", "run_comparison", "summarize", "train_run", "write_csv"]


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
        metrics = train_run([bundle_config, overlay], run_dir, {**(overrides or {}), "seed": seed}, threads=threads)
        return {"method": method, "seed": seed, **metrics}

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(train, runs))


def summarize(rows: Sequence[Mapping[str, Any]], baseline: str = "joint") -> list[dict[str, Any]]:
    """Mean ± std over seeds of every validation metric, and step time relative to ``baseline``."""
    by_method: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        by_method.setdefault(row["method"], []).append(row)
    base_time = None
    if baseline in by_method:
        base_time = statistics.mean(r["seconds_per_iteration"] for r in by_method[baseline])
    summary = []
    for method, runs in by_method.items():
        entry: dict[str, Any] = {"method": method, "seeds": len(runs)}
        for key in runs[0]["validation"]:
            values = [r["validation"][key] for r in runs]
            entry[key] = (statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0)
        step = statistics.mean(r["seconds_per_iteration"] for r in runs)
        entry["seconds_per_iteration"] = step
        entry["time_ratio"] = step / base_time if base_time else None
        summary.append(entry)
    return summary


def markdown_table(summary: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """A markdown table: one row per method, ``mean ± std`` cells for the given metric columns."""
    header = ["method", *[c.removeprefix("val/") for c in columns], "step time vs joint"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for entry in summary:
        cells = [entry["method"]]
        for column in columns:
            mean, std = entry[column]
            cells.append(f"{mean:.3f} ± {std:.3f}")
        ratio = entry.get("time_ratio")
        cells.append("—" if ratio is None else f"{ratio:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_csv(rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """One line per run: method, seed, step time and every validation metric."""
    path = Path(path)
    keys = sorted({k for row in rows for k in row["validation"]})
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["method", "seed", "seconds_per_iteration", *keys])
        for row in rows:
            writer.writerow(
                [row["method"], row["seed"], row["seconds_per_iteration"], *(row["validation"].get(k) for k in keys)]
            )
    return path
