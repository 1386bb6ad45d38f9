"""``brats_cggm.comparison``: runs of every method and seed, their summary and tables (no training)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

import brats_cggm.comparison as comparison


def _row(method: str, seed: int, dice: float, step: float) -> dict:
    return {"method": method, "seed": seed, "seconds_per_iteration": step, "validation": {"val/dice/mean": dice}}


def test_summary_mean_std_and_time_ratio():
    rows = [_row("joint", 0, 0.5, 1.0), _row("joint", 1, 0.7, 3.0), _row("cggm", 0, 0.9, 3.0)]
    joint, cggm = comparison.summarize(rows)
    assert joint["val/dice/mean"] == pytest.approx((0.6, 0.1414213), abs=1e-6)
    assert cggm["val/dice/mean"] == (0.9, 0.0) and cggm["time_ratio"] == pytest.approx(1.5)
    table = comparison.markdown_table([joint, cggm], ["val/dice/mean"])
    assert table.splitlines()[0] == "| method | dice/mean | step time vs joint |"
    assert "| cggm | 0.900 ± 0.000 | 1.50 |" in table


def test_summary_without_baseline_has_no_ratio():
    (entry,) = comparison.summarize([_row("cggm", 0, 0.9, 3.0)])
    assert entry["time_ratio"] is None
    assert "| cggm | 0.900 ± 0.000 | — |" in comparison.markdown_table([entry], ["val/dice/mean"])


@pytest.mark.parametrize(("jobs", "omp", "expected"), [(1, None, None), (2, None, 2), (3, None, 1), (2, "4", None)])
def test_concurrent_runs_share_the_cores(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, jobs: int, omp: str | None, expected: int | None
):
    if omp is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    monkeypatch.setattr(comparison.os, "cpu_count", lambda: 4)
    calls = []

    def fake_train_run(configs, run_dir, overrides, threads=None):
        calls.append((Path(run_dir).relative_to(tmp_path).as_posix(), overrides["seed"], threads))
        return {"seconds_per_iteration": 1.0, "validation": {}}

    monkeypatch.setattr(comparison, "train_run", fake_train_run)
    rows = comparison.run_comparison("train.yaml", {"joint": "j.yaml", "cggm": "c.yaml"}, [0, 1], tmp_path, jobs=jobs)
    assert [(r["method"], r["seed"]) for r in rows] == [("joint", 0), ("joint", 1), ("cggm", 0), ("cggm", 1)]
    assert sorted(calls) == sorted((f"{m}/seed{s}", s, expected) for m in ("joint", "cggm") for s in (0, 1))


def test_train_run_command_threads_and_failure(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    seen = {}

    def fake_run(command, env, **kwargs):
        seen.update(command=command, env=env)
        out = Path(command[command.index("--output_dir") + 1])
        (out / "metrics.json").write_text(json.dumps({"validation": {"val/dice/mean": 0.5}}))
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(comparison.subprocess, "run", fake_run)
    metrics = comparison.train_run(["a.yaml", "b.yaml"], tmp_path / "run", {"seed": 3, "device": "cpu"}, threads=1)
    assert metrics["validation"]["val/dice/mean"] == 0.5
    assert seen["env"]["OMP_NUM_THREADS"] == "1"
    command = seen["command"]
    assert command[command.index("--config_file") + 1] == "['a.yaml','b.yaml']"
    assert command[command.index("--seed") + 1] == "3" and command[command.index("--device") + 1] == "cpu"

    monkeypatch.setattr(comparison.subprocess, "run", lambda command, **kwargs: subprocess.CompletedProcess(command, 1))
    with pytest.raises(RuntimeError, match=r"train\.log"):
        comparison.train_run(["a.yaml"], tmp_path / "bad", {})
