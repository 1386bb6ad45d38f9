"""Learning-rate schedules stepped once per training iteration.

:class:`WarmupCosineLR` is the schedule of the CGGM authors' BraTS training (``cosine_scheduler`` in their
``src/eval_metrics.py``, used by ``src/segtrain.py``): a linear warm-up from a start value to the base learning
rate, then a cosine decay to a final learning rate that is not zero. MONAI's ``WarmupCosineSchedule`` decays to
zero; its ``end_lr`` only clamps that curve from below, so it would reach the floor early and stay there.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

__all__ = ["WarmupCosineLR", "warmup_cosine_factor"]


def warmup_cosine_factor(
    step: int, warmup_steps: int, total_steps: int, start_factor: float = 0.0, end_factor: float = 0.0
) -> float:
    """The multiplier of the base learning rate at iteration ``step`` (0-based).

    With ``W = warmup_steps`` and ``T = total_steps``:

    - warm-up, ``step < W``: ``start + (1 - start) * step / (W - 1)`` (``numpy.linspace(start, 1, W)``, so the
      last warm-up iteration runs at the base rate; ``start`` alone when ``W = 1``);
    - then ``end + (1 - end) * (1 + cos(pi * (step - W) / (T - W))) / 2``, which starts at 1 and would reach
      ``end`` one iteration after the last; iterations past ``T`` stay at ``end``.

    This is the authors' ``cosine_scheduler(base, final, epochs, niter_per_ep, warmup_epochs,
    start_warmup_value)`` divided by ``base``.

    Args:
        step: the iteration, from 0.
        warmup_steps: iterations of the linear warm-up (0: none).
        total_steps: iterations of the whole run, warm-up included.
        start_factor: the first warm-up iteration's learning rate over the base rate.
        end_factor: the final learning rate over the base rate.

    Returns:
        The factor.

    Raises:
        ValueError: ``total_steps`` below 1, ``warmup_steps`` outside ``[0, total_steps]`` or a negative factor.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be at least 1, got {total_steps}")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"warmup_steps must be between 0 and total_steps ({total_steps}), got {warmup_steps}")
    if start_factor < 0 or end_factor < 0:
        raise ValueError(f"start_factor and end_factor must not be negative, got {start_factor}, {end_factor}")
    if step < warmup_steps:
        fraction = step / (warmup_steps - 1) if warmup_steps > 1 else 0.0
        return start_factor + (1.0 - start_factor) * fraction
    if warmup_steps == total_steps:
        return 1.0
    progress = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))
    return end_factor + (1.0 - end_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupCosineLR(LambdaLR):
    """Linear warm-up, then cosine decay to ``end_factor`` times each parameter group's initial learning rate.

    Step it once per iteration (``LrScheduleHandler(epoch_level=False)``); see :func:`warmup_cosine_factor`.

    Args:
        optimizer: the wrapped optimizer; its groups' ``lr`` are the base rates.
        warmup_steps: iterations of the linear warm-up (at most ``total_steps``: longer warm-ups are cut there).
        total_steps: iterations of the whole run.
        start_factor: the first iteration's learning rate over the base rate.
        end_factor: the final learning rate over the base rate.
        last_epoch: the index of the last step (-1: a new schedule).
    """

    def __init__(
        self,
        optimizer: Optimizer,
        warmup_steps: int,
        total_steps: int,
        start_factor: float = 0.0,
        end_factor: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        # A run shorter than its warm-up warms up for the whole run, as MONAI's WarmupCosineSchedule does.
        warmup_steps = min(max(int(warmup_steps), 0), int(total_steps))
        warmup_cosine_factor(0, warmup_steps, total_steps, start_factor, end_factor)  # checks the arguments
        self.warmup_steps, self.total_steps = warmup_steps, int(total_steps)
        self.start_factor, self.end_factor = float(start_factor), float(end_factor)
        super().__init__(optimizer, self.factor, last_epoch)

    def factor(self, step: int) -> float:
        """The multiplier at iteration ``step``."""
        return warmup_cosine_factor(step, self.warmup_steps, self.total_steps, self.start_factor, self.end_factor)
