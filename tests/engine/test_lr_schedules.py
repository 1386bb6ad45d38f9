"""The warm-up then cosine-to-a-floor schedule against hand-computed values and the authors' formula."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from brats_cggm.engine.lr_schedules import WarmupCosineLR, warmup_cosine_factor


def authors_cosine_scheduler(base, final, epochs, niter_per_ep, warmup_epochs, start_warmup_value):
    """The CGGM authors' schedule (their src/eval_metrics.py), restated for the comparison."""
    warmup_iters = warmup_epochs * niter_per_ep
    warmup = np.linspace(start_warmup_value, base, warmup_iters) if warmup_epochs > 0 else np.array([])
    iters = np.arange(epochs * niter_per_ep - warmup_iters)
    return np.concatenate((warmup, final + 0.5 * (base - final) * (1 + np.cos(np.pi * iters / len(iters)))))


def test_hand_computed_factors() -> None:
    # W = 3, T = 7, start 0.2, end 0.1
    factors = [warmup_cosine_factor(i, 3, 7, 0.2, 0.1) for i in range(9)]
    assert factors[:3] == pytest.approx([0.2, 0.6, 1.0])
    assert factors[3] == pytest.approx(1.0)
    assert factors[5] == pytest.approx(0.1 + 0.9 * 0.5)  # halfway through the cosine: cos(pi / 2) = 0
    assert factors[7] == factors[8] == pytest.approx(0.1)  # past the end: the floor
    assert warmup_cosine_factor(0, 1, 5, 0.3, 0.0) == pytest.approx(0.3)
    assert warmup_cosine_factor(4, 4, 4, 0.3, 0.0) == 1.0


def test_matches_the_authors_schedule() -> None:
    expected = authors_cosine_scheduler(1e-2, 1e-3, 75, 3, 10, 4e-4)
    ours = [1e-2 * warmup_cosine_factor(i, 30, 225, 4e-4 / 1e-2, 1e-3 / 1e-2) for i in range(225)]
    np.testing.assert_allclose(ours, expected, rtol=1e-12)


def test_scheduler_steps_every_group() -> None:
    net = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD([{"params": [net.weight], "lr": 1.0}, {"params": [net.bias], "lr": 0.5}], lr=1.0)
    scheduler = WarmupCosineLR(optimizer, warmup_steps=2, total_steps=4, start_factor=0.5, end_factor=0.25)
    seen = []
    for _ in range(4):
        seen.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    assert seen[0] == pytest.approx([0.5, 0.25])
    assert seen[1] == pytest.approx([1.0, 0.5])
    assert seen[3][0] == pytest.approx(0.25 + 0.75 * 0.5 * (1 + math.cos(math.pi / 2)))
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.25)
    restored = WarmupCosineLR(optimizer, 2, 4, 0.5, 0.25)
    restored.load_state_dict(scheduler.state_dict())
    assert restored.last_epoch == 4


@pytest.mark.parametrize(
    ("args", "message"),
    [((2, 0, 0.0, 0.0), "total_steps"), ((5, 4, 0.0, 0.0), "warmup_steps"), ((1, 4, -0.1, 0.0), "negative")],
)
def test_bad_arguments(args, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        warmup_cosine_factor(0, *args)


def test_a_run_shorter_than_its_warm_up_warms_up_throughout() -> None:
    optimizer = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=1.0)
    scheduler = WarmupCosineLR(optimizer, warmup_steps=10, total_steps=3, start_factor=0.1, end_factor=0.1)
    assert scheduler.warmup_steps == 3
    rates = []
    for _ in range(3):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates == pytest.approx([0.1, 0.55, 1.0])
