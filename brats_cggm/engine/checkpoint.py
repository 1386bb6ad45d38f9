"""Checkpoints written atomically: a crash while writing never costs the last good checkpoint."""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events

from brats_cggm.engine.distributed import is_main_process

__all__ = ["BestModelSaver", "TrainingCheckpointSaver", "atomic_torch_save"]


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file in the target folder, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _state_dicts(objects: dict[str, Any]) -> dict[str, Any]:
    return {name: obj.state_dict() for name, obj in objects.items()}


class TrainingCheckpointSaver:
    """Saves everything needed to resume (``save_dict``'s state dicts) to one file, atomically.

    Written every ``interval`` epochs and when training completes; only rank 0 writes.

    Args:
        save_path: the checkpoint file (overwritten in place by an atomic rename).
        save_dict: name → object with ``state_dict`` (network, heads, optimizers, balancer, ...); the
            engine the handler is attached to is added as ``"trainer"`` (epoch and iteration).
        interval: epochs between saves; 0 saves only at the end.
    """

    def __init__(self, save_path: str | os.PathLike, save_dict: dict[str, Any], interval: int = 1) -> None:
        self.save_path = Path(save_path)
        self.save_dict = save_dict
        self.interval = int(interval)

    def attach(self, engine: Engine) -> None:
        self.save_dict = {**self.save_dict, "trainer": engine}
        if not is_main_process():
            return
        if self.interval > 0:
            engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self)
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        atomic_torch_save(_state_dicts(self.save_dict), self.save_path)


class BestModelSaver:
    """Saves the network's weights whenever the evaluator's key metric improves (``models/model.pt``).

    Args:
        save_path: where the weights go.
        network: the network whose ``state_dict`` is saved (unwrap DDP before passing it).
        metric_name: the evaluator metric to maximise; the evaluator's key metric when None.
    """

    def __init__(self, save_path: str | os.PathLike, network: torch.nn.Module, metric_name: str | None = None) -> None:
        self.save_path = Path(save_path)
        self.network = network
        self.metric_name = metric_name
        self.best = -math.inf

    def attach(self, engine: Engine) -> None:
        if is_main_process():
            engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        name = self.metric_name or engine.state.key_metric_name
        value = float(engine.state.metrics[name])
        if value > self.best:
            self.best = value
            atomic_torch_save(self.network.state_dict(), self.save_path)

    def state_dict(self) -> dict[str, float]:
        return {"best": self.best}

    def load_state_dict(self, state_dict: dict[str, float]) -> None:
        self.best = float(state_dict["best"])
