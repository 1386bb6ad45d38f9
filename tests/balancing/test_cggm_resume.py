"""CGGM state survives a checkpoint: a fresh process resumes with the uninterrupted run's B, L_gm and parameters
(ε per batch with both direction modes; ε per epoch, whose B is decided at the epoch's end, with decoder heads)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ignite.engine import Events

from brats_cggm.balancing.cggm import CGGMBalancer
from brats_cggm.engine.checkpoint import atomic_torch_save
from tests.helpers.tiny_setup import MODALITIES, make_batches, make_trainer

STEPS_PER_EPOCH = 3
#: ``name: (direction, epsilon, aux_head)``
SETUPS = {
    "grad": ("grad", "batch", "light"),
    "param": ("param", "batch", "light"),
    "epoch": ("grad", "epoch", "decoder"),
}


def _objects(trainer) -> dict:
    return {
        "network": trainer.network,
        "aux_heads": trainer.aux_heads,
        "optimizer": trainer.optimizer,
        "aux_optimizer": trainer.aux_optimizer,
        "balancer": trainer.balancer,
        "trainer": trainer,
    }


def _run(setup: str, epochs: int, resume_from: str | None = None, save_to: str | None = None) -> dict:
    """Train ``epochs`` epochs of 3 steps (resuming from a checkpoint if given); return B, L_gm and parameters."""
    direction, epsilon, aux_head = SETUPS[setup]
    balancer = CGGMBalancer(MODALITIES, rho=1.0, lam=0.1, direction=direction, epsilon=epsilon)
    trainer = make_trainer(balancer, make_batches(STEPS_PER_EPOCH), max_epochs=epochs, aux_head=aux_head)
    if resume_from is not None:
        state = torch.load(resume_from, weights_only=True)
        for name, obj in _objects(trainer).items():
            obj.load_state_dict(state[name])
    log: list[dict] = []
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED,
        lambda e: log.append({k: float(v) for k, v in e.state.output["balancer"].items() if "/B/" in k or "L_gm" in k}),
    )
    trainer.run()
    if save_to is not None:
        atomic_torch_save({name: obj.state_dict() for name, obj in _objects(trainer).items()}, save_to)
    return {"log": log, "params": {n: p.detach().clone() for n, p in trainer.network.named_parameters()}}


def test_resume_in_a_fresh_process_matches_the_uninterrupted_run(tmp_path: Path):
    for setup in SETUPS:
        uninterrupted = _run(setup, epochs=2)
        checkpoint = tmp_path / f"{setup}.pt"
        first_half = _run(setup, epochs=1, save_to=str(checkpoint))
        assert first_half["log"] == uninterrupted["log"][:STEPS_PER_EPOCH]
        if SETUPS[setup][1] == "epoch":  # the second epoch's B comes from the first epoch's ε, in the checkpoint
            b_first, b_second = uninterrupted["log"][0], uninterrupted["log"][STEPS_PER_EPOCH]
            assert all(v == pytest.approx(0.75) for k, v in b_first.items() if "/B/" in k)  # neutral ρ(M−1)/M
            assert b_first != b_second

        result = tmp_path / f"{setup}-resumed.pt"
        argv = ["x", setup, str(checkpoint), str(result), str(torch.get_num_threads())]
        code = f"import sys; sys.argv = {argv!r}; exec(open({__file__!r}).read())"
        # the repository root, for ``tests.helpers``; conftest's thread count, for the same float reductions
        # (from the start: OMP_NUM_THREADS; then set exactly as conftest sets it, see below)
        env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
        subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2], env=env)
        resumed = torch.load(result, weights_only=True)

        assert resumed["log"] == uninterrupted["log"][STEPS_PER_EPOCH:]
        assert resumed["params"].keys() == uninterrupted["params"].keys()
        for name, value in uninterrupted["params"].items():
            torch.testing.assert_close(resumed["params"][name], value, rtol=0, atol=0)


if __name__ == "__main__" and len(sys.argv) == 5:  # the fresh process of the test above
    # torch.set_num_threads, as conftest calls it in the parent: besides OpenMP it pins MKL's thread count
    # (mkl_set_dynamic(false)), which OMP_NUM_THREADS alone leaves to MKL; the two processes must reduce alike
    torch.set_num_threads(int(sys.argv[4]))
    torch.save(_run(sys.argv[1], epochs=2, resume_from=sys.argv[2]), sys.argv[3])
