"""Run by ``test_distributed.py`` under torchrun (CPU, gloo): rank ``sys.argv[2]`` freezes in epoch 1.

The process group's timeout is ``sys.argv[1]`` seconds; every rank trains one epoch of one iteration in an
ignite engine with :class:`~brats_cggm.engine.distributed.RankSyncHandler`, as the multi-GPU bundle does.
The frozen rank sleeps far past the timeout; the others must stop, naming it: at the end of the epoch, or,
with ``sys.argv[3] == "collective"``, in the step's all-reduce (as DDP's gradient all-reduce would).
Rank 1 starts :data:`STARTUP_SKEW_S` late, longer than the timeout, as a process on a busy machine can:
start-up is not a fault.
"""

# ruff: noqa: E402 (transformers is blocked before the imports)
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

#: How late rank 1 starts (seconds), above the timeout these tests give the process group.
STARTUP_SKEW_S = 3.0
if os.environ.get("RANK") == "1":
    time.sleep(STARTUP_SKEW_S)

# MONAI imports transformers eagerly when it is installed (seconds per process); nothing here needs it
sys.modules.setdefault("transformers", None)  # type: ignore[arg-type]

import torch
import torch.distributed as dist
from ignite.engine import Engine

sys.path[:0] = [str(Path(__file__).resolve().parents[2])]  # the repository root
from brats_cggm.core.distributed import get_rank
from brats_cggm.engine.distributed import RankSyncHandler, destroy_distributed, init_distributed

#: How long the frozen rank sleeps: the test fails if anything waits for it.
FROZEN_S = 120


def main(timeout_s: float, frozen_rank: int, where: str) -> None:
    init_distributed("cpu", timeout_s=timeout_s)

    def step(engine: Engine, batch: int) -> None:
        print(f"rank {get_rank()} steps at {time.time():.3f}", flush=True)  # the test times the rest from here
        if get_rank() == frozen_rank:
            time.sleep(FROZEN_S)
        if where == "collective":
            dist.all_reduce(torch.ones(4))

    engine = Engine(step)
    RankSyncHandler().attach(engine)
    engine.run([0], max_epochs=1)
    destroy_distributed()


if __name__ == "__main__":
    main(float(sys.argv[1]), int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else "epoch_end")
