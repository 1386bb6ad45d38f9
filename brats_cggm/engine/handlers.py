"""Ignite handlers: per-iteration training scalars and the final metrics file."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from ignite.engine import Engine, Events

from brats_cggm.core.distributed import is_main_process
from brats_cggm.core.files import remove_stale_temporaries, write_json

if TYPE_CHECKING:
    from monai.engines import SupervisedTrainer

__all__ = ["ACTIVITY_TAG", "MetricsJSONWriter", "TrainingScalarsHandler", "is_scalar", "to_float", "training_activity"]

#: The TensorBoard prefix of the activity statistics (and the ``metrics.json`` entry that holds them).
ACTIVITY_TAG = "activity"


def to_float(value: Any) -> float:
    """A metric or loss value as a float (a tensor's mean, so a one-element tensor's value)."""
    if isinstance(value, torch.Tensor):
        return float(value.detach().float().mean().item())
    return float(value)


def training_activity(engine: Any) -> dict[str, float]:
    """How often and how strongly the trainer's balancer and modality dropout acted so far (``docs/methods.md`` §0.3).

    Args:
        engine: a :class:`~brats_cggm.engine.trainer.BalancedTrainer` (an engine without a balancer or modality
            dropout contributes nothing of it).

    Returns:
        ``Balancer.activity()`` and ``ModalityDropout.activity()`` merged (``{}`` for joint training without
        modality dropout).
    """
    activity: dict[str, float] = {}
    for source in (getattr(engine, "balancer", None), getattr(engine, "modality_dropout", None)):
        if source is not None and hasattr(source, "activity"):
            activity.update(source.activity())
    return activity


class TrainingScalarsHandler:
    """Writes a :class:`~brats_cggm.engine.trainer.BalancedTrainer`'s step scalars to TensorBoard.

    Tags: ``train/loss``, ``train/task_loss``, ``train/aux_loss``, ``train/lr``,
    ``<utilization_tag>/<modality>`` (the auxiliary heads' ε), ``grad_norm/<modality>``, the
    balancer's own scalars (``<balancer>/...``) and, with missing-modality training, the fraction of samples
    without each modality (``modality_dropout/step/<modality>``, ``modality_dropout/run/<modality>``); at every
    epoch end, the run's activity statistics so far (:func:`training_activity`) as ``activity/<name>`` at the
    epoch's last iteration (a decision taken at an epoch's end, e.g. InfoReg's window, shows at the next one).
    Only rank 0 writes. At the first iteration it also writes the
    custom-scalars layout of :func:`~brats_cggm.engine.tensorboard_layout.modality_balance_layout` (the
    balancer's tags are known from then on).

    Args:
        modalities: modality names, in encoder order.
        summary_writer: a ``SummaryWriter``; created in ``log_dir`` when None.
        log_dir: where to create the writer.
        interval: write every ``interval`` iterations.
        utilization_tag: the prefix of the per-modality ε (e.g. ``train/modality_dice``).
    """

    def __init__(
        self,
        modalities: Sequence[str],
        summary_writer: Any = None,
        log_dir: str | os.PathLike = "./runs",
        interval: int = 1,
        utilization_tag: str = "train/modality_dice",
    ) -> None:
        self.modalities = tuple(modalities)
        self._writer = summary_writer
        self.log_dir = log_dir
        self.interval = int(interval)
        self.utilization_tag = utilization_tag
        self._layout_written = False

    @property
    def writer(self) -> Any:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.log_dir))
        return self._writer

    def attach(self, engine: Engine) -> None:
        if is_main_process():
            engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.interval), self)
            engine.add_event_handler(Events.EPOCH_COMPLETED, self.write_activity)

    def write_activity(self, engine: Engine) -> None:
        """Write the run's activity statistics so far as ``activity/<name>`` (see :func:`training_activity`)."""
        for name, value in training_activity(engine).items():
            self.writer.add_scalar(f"{ACTIVITY_TAG}/{name}", float(value), engine.state.iteration)

    def __call__(self, engine: SupervisedTrainer) -> None:
        output, step, writer = engine.state.output, engine.state.iteration, self.writer
        if not isinstance(output, dict):
            raise TypeError(f"the trainer's output is {type(output).__name__}, not the balanced trainer's dict")
        if not self._layout_written:
            from brats_cggm.engine.tensorboard_layout import modality_balance_layout

            layout = modality_balance_layout(self.modalities, output["balancer"], self.utilization_tag)
            writer.add_custom_scalars(layout)
            self._layout_written = True
        writer.add_scalar("train/loss", to_float(output["loss"]), step)
        writer.add_scalar("train/task_loss", to_float(output["task_loss"]), step)
        writer.add_scalar("train/aux_loss", to_float(output["aux_loss"]), step)
        writer.add_scalar("train/lr", engine.optimizer.param_groups[0]["lr"], step)
        for name, eps, norm in zip(self.modalities, output["utilization"].tolist(), output["grad_norm"].tolist()):
            writer.add_scalar(f"{self.utilization_tag}/{name}", eps, step)
            writer.add_scalar(f"grad_norm/{name}", norm, step)
        for tag, value in {**output["balancer"], **output.get("modality_dropout", {})}.items():
            writer.add_scalar(tag, to_float(value), step)


class MetricsJSONWriter:
    """Writes ``metrics.json`` (the last validation metrics, the best key metric) when training ends.

    With a balancer or modality dropout that acted, ``"activity"`` holds the run's final activity statistics
    (:func:`training_activity`).

    It also reports the mean training step time (``seconds_per_iteration``: forward, backward and
    optimizer steps, without data loading or validation; the first iteration is left out as warm-up).

    Args:
        output_dir: the run's output folder.
        evaluator: the validation engine whose ``state.metrics`` are reported.
        extra: more entries for the file (e.g. the configuration's name).
        filename: the file name inside ``output_dir``.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        evaluator: Engine,
        extra: dict | None = None,
        filename: str = "metrics.json",
    ) -> None:
        self.path = Path(output_dir) / filename
        self.evaluator = evaluator
        self.extra = dict(extra or {})
        self._step_times: list[float] = []
        self._step_start = 0.0

    def attach(self, engine: Engine) -> None:
        if is_main_process():
            remove_stale_temporaries(self.path)
            engine.add_event_handler(Events.ITERATION_STARTED, self._start_step)
            engine.add_event_handler(Events.ITERATION_COMPLETED, self._end_step)
            engine.add_event_handler(Events.COMPLETED, self)

    def _start_step(self, engine: Engine) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self._step_start = time.perf_counter()

    def _end_step(self, engine: Engine) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self._step_times.append(time.perf_counter() - self._step_start)

    def __call__(self, engine: Engine) -> None:
        state = self.evaluator.state
        metrics = {k: to_float(v) for k, v in state.metrics.items() if is_scalar(v)}
        report = {
            "epoch": engine.state.epoch,
            "iteration": engine.state.iteration,
            "validation": metrics,
            "best_metric": getattr(state, "best_metric", None),
            "best_metric_epoch": getattr(state, "best_metric_epoch", None),
            "seconds_per_iteration": _mean(self._step_times[1:] or self._step_times),
            **self.extra,
        }
        activity = training_activity(engine)
        if activity:  # how often and how strongly the balancer acted (docs/methods.md §0.3)
            report[ACTIVITY_TAG] = activity
        write_json(self.path, report)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def is_scalar(value: Any) -> bool:
    """Whether a metric value is one number (an int, a float or a one-element tensor)."""
    if isinstance(value, torch.Tensor):
        return value.numel() == 1
    return isinstance(value, int | float)
