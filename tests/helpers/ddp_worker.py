"""Run by ``test_distributed.py`` under torchrun (CPU processes, gloo); writes ``rank<r>.pt`` to ``sys.argv[1]``.

In one process group (``tiny_run.build``: 3 epochs of 2 iterations per rank, each rank on its own
shard): (1) an uninterrupted run, (2) the same run killed in iteration 3, (3) fresh objects resumed
from (2)'s checkpoint under other global seeds and continued to the end; then the validation
sampler's shards and the Dice they reduce to, and each rank's answer about a previous run's ``output_dir``
and about one another run holds.
"""

# ruff: noqa: E402 (transformers is blocked before the imports)
from __future__ import annotations

import os
import sys
from pathlib import Path

# MONAI imports transformers eagerly when it is installed (seconds per process); nothing here needs it
sys.modules.setdefault("transformers", None)  # type: ignore[arg-type]

import numpy as np
import torch
from monai.metrics import DiceMetric

sys.path[:0] = [str(Path(__file__).resolve().parents[2])]  # the repository root, for ``tests.helpers``
from brats_cggm.core.distributed import all_reduce_mean, barrier, get_rank, get_world_size
from brats_cggm.core.locks import FileLock
from brats_cggm.engine.distributed import destroy_distributed, init_distributed, validation_sampler
from brats_cggm.engine.output_dir import (
    LOCK_FILE,
    OutputDirInUseError,
    OutputDirLock,
    RunExistsError,
    prepare_output_dir,
)
from brats_cggm.engine.resume import resume_from_checkpoint
from tests.helpers.tiny_run import build, kill_at

KILL_AT = 3  # an iteration in the middle of epoch 2; the last checkpoint is that of epoch 1


def validation_metric() -> dict:
    """5 validation cases over the ranks: which each rank sees, and the Dice their scores reduce to."""
    cases = list(range(5))
    shard = list(validation_sampler(cases))
    metric = DiceMetric(include_background=True, reduction="mean")
    for case in shard:  # case c predicts a (c + 1)-voxel square of a 16-voxel target: Dice 2(c+1)/(c+17)
        pred, label = torch.zeros(1, 1, 4, 4), torch.ones(1, 1, 4, 4)
        pred.view(-1)[: case + 1] = 1
        metric(y_pred=pred, y=label)
    return {"shard": shard, "dice": float(metric.aggregate())}


def output_dir_decisions(out: Path) -> dict:
    """Every rank asks ``prepare_output_dir`` about a previous run's folder: refused, then overwritten."""
    previous = out / "previous_run"
    if get_rank() == 0:
        (previous / "models").mkdir(parents=True)
        (previous / "models" / "checkpoint.pt").write_bytes(b"")
        (previous / "metrics.json").write_text("{}")
    barrier()
    try:
        prepare_output_dir(previous)
        refused = ""
    except RunExistsError as exc:
        refused = str(exc)
    prepare_output_dir(previous, overwrite=True)
    left = sorted(p.name for p in previous.rglob("*") if p.is_file())

    # another run holds the folder (here rank 0 itself, through a second open file: flock tells them apart)
    locked = out / "locked"
    holder = None
    if get_rank() == 0:
        locked.mkdir()
        holder = FileLock(locked / LOCK_FILE).acquire()
    barrier()
    try:
        prepare_output_dir(locked, resume=True, lock=OutputDirLock(locked))
        in_use = ""
    except OutputDirInUseError as exc:
        in_use = str(exc)
    barrier()
    if holder is not None:
        holder.release()
    return {"refused": refused, "left": left, "in_use": in_use}


def main(out: Path) -> None:
    init_distributed("cpu")
    assert get_world_size() > 1, "run me under torchrun"
    rank = get_rank()
    result = {"world_size": get_world_size(), "mean_of_rank": float(all_reduce_mean(torch.tensor(float(rank))))}
    result["pid"] = os.getpid()

    run = build(out / "uninterrupted")
    run.trainer.run()
    result["uninterrupted"] = run.result()

    kill_at(build(out / "interrupted"), KILL_AT)
    run = build(out / "interrupted")
    torch.manual_seed(1234 + rank)  # the resumed run must not depend on the seeds it starts with
    np.random.seed(1234 + rank)  # noqa: NPY002
    result["resumed_from"] = str(resume_from_checkpoint(True, run.handlers, run.trainer))
    result["resumed_at"] = run.trainer.state.iteration
    run.trainer.run()
    result["resumed"] = run.result()

    run = build(out / "modality_dropout", modality_dropout=0.5)
    run.trainer.run()
    result["modality_dropout"] = run.result()
    result["validation"] = validation_metric()
    result["output_dir"] = output_dir_decisions(out)
    torch.save(result, out / f"rank{rank}.pt")
    destroy_distributed()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
