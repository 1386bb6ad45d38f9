"""Two CPU processes under torchrun (gloo): replicas stay identical, resumption is exact, validation is unbiased."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "bundles" / "brats_cggm" / "configs"
WORKER = Path(__file__).parents[1] / "helpers" / "ddp_worker.py"
TIMEOUT_WORKER = Path(__file__).parents[1] / "helpers" / "ddp_timeout_worker.py"
WORLD_SIZE = 2


def _torchrun(*args: str) -> list[str]:
    """A one-node ``torchrun`` command line that binds its rendezvous port itself.

    ``--standalone`` lets torchrun's store listen on a port the OS gives it and hands that port to the
    workers; a port probed here as free and passed on could be taken by another process before torchrun
    binds it (a shared test machine binds ephemeral ports all the time).
    """
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--local-addr=127.0.0.1"]
    return [*torchrun, f"--nproc_per_node={WORLD_SIZE}", *args]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """The results of ``ddp_worker.py`` on every rank (one torchrun launch for the whole module)."""
    out = tmp_path_factory.mktemp("ddp")
    command = _torchrun(str(WORKER), str(out))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD_SIZE)]


def _max_abs_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def test_all_reduce_mean_averages_over_ranks(ranks: list[dict]):
    assert [r["world_size"] for r in ranks] == [WORLD_SIZE] * WORLD_SIZE
    assert [r["mean_of_rank"] for r in ranks] == [0.5, 0.5]


@pytest.mark.parametrize("run", ["uninterrupted", "resumed", "modality_dropout"])
def test_ranks_train_on_different_data_yet_hold_identical_parameters_and_coefficients(ranks: list[dict], run: str):
    first, second = ranks[0][run], ranks[1][run]
    # the shards differ, so the local losses do: identity comes from DDP and the all-reduced ε
    assert all(a["task_loss"] != b["task_loss"] for a, b in zip(first["log"], second["log"]))
    assert [step["B"] for step in first["log"]] == [step["B"] for step in second["log"]]
    assert _max_abs_difference(first["params"], second["params"]) <= 1e-6
    # the coefficients moved away from their start (CGGM acted)
    assert len({tuple(step["B"]) for step in first["log"]}) == len(first["log"])


def test_missing_modality_training_runs_under_ddp(ranks: list[dict]):
    # absent encoders and heads take no part in a step: DDP with find_unused_parameters keeps the ranks in step
    steps = ranks[0]["modality_dropout"]["log"]
    assert any(v > 0 for step in steps for k, v in step["dropped"].items() if k.startswith("modality_dropout/step"))


def test_interrupted_and_resumed_run_equals_the_uninterrupted_one(ranks: list[dict]):
    for rank in ranks:
        assert Path(rank["resumed_from"]).name == "checkpoint.pt"
        assert rank["resumed_at"] == 2  # the end of epoch 1; the run was killed in iteration 3
        uninterrupted, resumed = rank["uninterrupted"], rank["resumed"]
        assert [s["iteration"] for s in resumed["log"]] == [3, 4, 5, 6]
        assert resumed["log"] == uninterrupted["log"][2:]
        assert _max_abs_difference(resumed["params"], uninterrupted["params"]) == 0.0


def test_validation_metric_is_reduced_over_ranks_without_padded_duplicates(ranks: list[dict]):
    shards = [r["validation"]["shard"] for r in ranks]
    assert sorted(shards[0] + shards[1]) == [0, 1, 2, 3, 4]  # every case once
    dice = [2 * (c + 1) / (c + 17) for c in range(5)]
    exact = sum(dice) / len(dice)
    padded = (sum(dice) + dice[0]) / (len(dice) + 1)  # what an evenly divisible sampler would report
    assert abs(exact - padded) > 1e-2
    for rank in ranks:
        assert rank["validation"]["dice"] == pytest.approx(exact, abs=1e-6)


def test_every_rank_gets_rank_0s_answer_about_a_previous_run(ranks: list[dict]):
    for rank in ranks:
        assert "holds a previous run" in rank["output_dir"]["refused"]
        assert rank["output_dir"]["left"] == []


def test_every_rank_stops_when_another_run_holds_the_output_dir(ranks: list[dict]):
    for rank in ranks:
        assert f"is in use by pid {ranks[0]['pid']} on host" in rank["output_dir"]["in_use"]


@pytest.mark.parametrize("bundle", ["brats_cggm", "multimodal_cggm"])
def test_multi_gpu_overlay_creates_the_process_group_first_and_keeps_train_initialize(bundle: str):
    configs = REPO / "bundles" / bundle / "configs"
    parser = ConfigParser()
    parser.read_config([str(configs / "train.yaml"), str(configs / "multi_gpu_train.yaml")])
    single = ConfigParser()
    single.read_config(str(configs / "train.yaml"))
    initialize = parser["initialize"]
    assert "init_distributed" in initialize[0]
    # the overlay repeats train.yaml's initialize after its own items: keep the two in step
    assert initialize[-len(single["initialize"]) :] == single["initialize"]
    assert parser["finalize"][: len(single["finalize"])] == single["finalize"]
    assert "destroy_distributed" in parser["finalize"][-1]
    assert "ddp_wrap" in parser["train#trainer#network"] and "ddp_wrap" in parser["train#trainer#aux_heads"]


# rank 1 frozen: rank 0 names it; rank 0 frozen: rank 1 does (slow: the same, seen from the other side); at the
# epoch's end (the ranks' meeting) or inside a collective (its timeout, then the diagnosis)
@pytest.mark.parametrize(
    "frozen_rank,where",
    [
        (1, "epoch_end"),
        pytest.param(0, "epoch_end", marks=pytest.mark.slow),
        pytest.param(1, "collective", marks=pytest.mark.slow),
    ],
)
def test_a_frozen_rank_stops_the_others_within_the_timeout_naming_it(frozen_rank: int, where: str):
    from tests.helpers.ddp_timeout_worker import FROZEN_S

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        _torchrun(str(TIMEOUT_WORKER), "2", str(frozen_rank), where),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=FROZEN_S,
    )
    ended = time.time()
    output = done.stdout + done.stderr
    assert done.returncode != 0, output[-3000:]
    assert "RankTimeoutError" in output, output[-3000:]
    healthy = 1 - frozen_rank
    stepped = float(re.search(rf"rank {healthy} steps at ([\d.]+)", output).group(1))
    # from the healthy rank's step to the end, not counting the processes' start (slow on a busy machine)
    assert ended - stepped < FROZEN_S / 4, output[-3000:]
    barrier = "at the end of epoch 1" if where == "epoch_end" else "after a collective timed out in epoch 1"
    assert f"rank {healthy}: rank {frozen_rank} did not reach the barrier {barrier}" in output
    assert "within 2 s (distributed_timeout)" in output


def test_multi_gpu_overlays_pass_distributed_timeout_and_meet_before_validation():
    for bundle in ("brats_cggm", "multimodal_cggm"):
        configs = REPO / "bundles" / bundle / "configs"
        parser = ConfigParser()
        parser.read_config([str(configs / "train.yaml"), str(configs / "multi_gpu_train.yaml")])
        assert 60 <= parser["distributed_timeout"] < 1800
        assert "timeout_s=@distributed_timeout" in parser["initialize"][0]
        assert parser["train#trainer#train_handlers"].startswith("$[RankSyncHandler()] + ")


@pytest.mark.slow
def test_bundle_trains_on_two_cpu_processes_and_resumes(tmp_path: Path):
    """The documented torchrun command, tiny: rank 0 alone writes; ``--resume true`` continues the run."""
    files = [str(CONFIGS / "train.yaml"), str(CONFIGS / "multi_gpu_train.yaml")]
    output_dir = tmp_path / "out"
    command = _torchrun("-m", "monai.bundle", "run", "--config_file", repr(files))
    command += ["--meta_file", str(CONFIGS / "metadata.json")]
    command += ["--logging_file", str(CONFIGS / "logging.conf"), "--device", "cpu", "--val_interval", "1"]
    command += ["--patch_size", "[16,16,16]", "--network_def#features", "[4,8,16]", "--num_samples", "1"]
    command += ["--phantoms", "{'n': 5, 'shape': [32,32,32], 'seed': 0}", "--val_fraction", "0.4"]
    command += ["--sw_batch_size", "2", "--phantom_dir", str(tmp_path / "phantoms"), "--output_dir", str(output_dir)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for epochs, resume in ((1, "false"), (2, "true")):
        done = subprocess.run(
            [*command, "--max_epochs", str(epochs), "--resume", resume],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "resumed from" in done.stdout + done.stderr
    assert len(list(output_dir.glob("events.out.tfevents.*"))) == 2  # one per run, rank 0's
    checkpoint = torch.load(output_dir / "models" / "checkpoint.pt", weights_only=True)
    assert checkpoint["trainer"]["iteration"] == 2  # 3 training cases, 2 per rank, batch 2: 1 iteration per epoch
    assert len(checkpoint["rng"]) == WORLD_SIZE
    assert checkpoint["validation"]["best_metric_epoch"] in (1, 2)
    assert (output_dir / "models" / "model.pt").is_file()
    assert (output_dir / "metrics.json").is_file()

    # without --resume the finished run is refused on every rank, before anything is written, and none hangs
    before = {p: p.stat().st_mtime_ns for p in output_dir.rglob("*")}
    done = subprocess.run(
        [*command, "--max_epochs", "3"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode != 0
    assert "holds a previous run" in done.stdout + done.stderr
    assert {p: p.stat().st_mtime_ns for p in output_dir.rglob("*")} == before
