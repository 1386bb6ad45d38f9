"""``brats_cggm.experiments.runs``: one subprocess per method and seed, and the short-run schedules (no training)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

import brats_cggm.experiments.runs as runs


@pytest.mark.parametrize(("jobs", "omp", "expected"), [(1, None, None), (2, None, 2), (3, None, 1), (2, "4", None)])
def test_concurrent_runs_share_the_cores(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, jobs: int, omp: str | None, expected: int | None
):
    if omp is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    monkeypatch.setattr(runs.os, "cpu_count", lambda: 4)
    calls = []

    def fake_train_run(configs, run_dir, overrides, threads=None):
        calls.append((Path(run_dir).relative_to(tmp_path).as_posix(), overrides["seed"], threads))
        return {"seconds_per_iteration": 1.0, "validation": {}}

    monkeypatch.setattr(runs, "train_run", fake_train_run)
    rows = runs.run_comparison("train.yaml", {"joint": "j.yaml", "cggm": "c.yaml"}, [0, 1], tmp_path, jobs=jobs)
    assert [(r["method"], r["seed"]) for r in rows] == [("joint", 0), ("joint", 1), ("cggm", 0), ("cggm", 1)]
    assert sorted(calls) == sorted((f"{m}/seed{s}", s, expected) for m in ("joint", "cggm") for s in (0, 1))


def test_method_overrides_apply_to_that_method_only(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    seen = {}

    def fake_train_run(configs, run_dir, overrides, threads=None):
        seen[Path(run_dir).relative_to(tmp_path).as_posix()] = (list(configs), overrides)
        return {"seconds_per_iteration": 1.0, "validation": {}}

    monkeypatch.setattr(runs, "train_run", fake_train_run)
    runs.run_comparison(
        "train.yaml",
        {"joint": "j.yaml", "opm": "o.yaml"},
        [3],
        tmp_path,
        overrides={"max_epochs": 5, "balancer#warmup_epochs": 9, "seed": 7},
        method_overrides={"opm": {"balancer#warmup_epochs": 0}},
    )
    assert seen["joint/seed3"] == (["train.yaml", "j.yaml"], {"max_epochs": 5, "balancer#warmup_epochs": 9, "seed": 3})
    assert seen["opm/seed3"] == (["train.yaml", "o.yaml"], {"max_epochs": 5, "balancer#warmup_epochs": 0, "seed": 3})


def test_train_run_command_threads_and_failure(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    seen = {}

    def fake_run(command, env, **kwargs):
        seen.update(command=command, env=env)
        out = Path(command[command.index("--output_dir") + 1])
        (out / "metrics.json").write_text(json.dumps({"validation": {"val/dice/mean": 0.5}}))
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(runs.subprocess, "run", fake_run)
    metrics = runs.train_run(["a.yaml", "b.yaml"], tmp_path / "run", {"seed": 3, "device": "cpu"}, threads=1)
    assert metrics["validation"]["val/dice/mean"] == 0.5
    assert seen["env"]["OMP_NUM_THREADS"] == "1"
    command = seen["command"]
    assert command[command.index("--config_file") + 1] == "['a.yaml','b.yaml']"
    assert command[command.index("--seed") + 1] == "3" and command[command.index("--device") + 1] == "cpu"

    monkeypatch.setattr(runs.subprocess, "run", lambda command, **kwargs: subprocess.CompletedProcess(command, 1))
    with pytest.raises(RuntimeError, match=r"train\.log"):
        runs.train_run(["a.yaml"], tmp_path / "bad", {})
    # a run started again (resumed) keeps the log of its earlier part
    with pytest.raises(RuntimeError):
        runs.train_run(["a.yaml"], tmp_path / "bad", {"resume": True})
    log = (tmp_path / "bad" / "train.log").read_text().splitlines()
    assert len(log) == 2 and log[0].startswith("=== ") and log[1].endswith("--resume true")


@pytest.mark.parametrize(
    ("method", "max_epochs", "expected"),
    [
        ("joint", 20, {}),
        ("cggm", 20, {}),
        ("opm", 20, {"balancer#warmup_epochs": 2}),
        ("opm", 5, {"balancer#warmup_epochs": 0}),  # a tenth of the budget, rounded down: no warm-up
        ("relearning", 20, {"balancer#reinit_epoch": 6, "balancer#reinit_num": 2}),
        ("relearning", 2, {"balancer#reinit_epoch": 1, "balancer#reinit_num": 2}),
        ("relearning", 1, {}),  # nothing left to re-learn in after a diagnosis
        ("dropout", 20, {}),  # an overlay, not a balancer: joint training with the missing-modality option
    ],
)
def test_short_run_overrides_come_from_the_balancer(method: str, max_epochs: int, expected: dict):
    assert runs.short_run_overrides(method, max_epochs) == expected


def test_short_run_overrides_of_an_unknown_method():
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        runs.short_run_overrides("nope", 10)
