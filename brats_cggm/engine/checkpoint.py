"""Checkpoints written atomically: a crash while writing never costs the last good checkpoint.

A training checkpoint (``models/checkpoint.pt``) holds the state dicts of the network, the auxiliary
heads, both optimizers, the LR scheduler, the balancer and the trainer (epoch, iteration), every
rank's random number generator states and the validation bookkeeping (best metric, best model). It is
written to a temporary file, fsynced and renamed over the target; the checkpoint it replaces is kept as
``checkpoint.prev.pt``, and :func:`load_checkpoint` falls back to it, with a warning, when the newest
file is truncated or unreadable. :mod:`brats_cggm.engine.resume` loads it back.

Everything in it is a tensor or a plain python type, so it loads with ``torch.load(weights_only=True)``
(for inference too); :func:`load_checkpoint` never loads anything else (numpy arrays aside, which older
checkpoints' RNG states are). Non-finite weights or optimizer states are never written: the savers stop
training instead, and the last checkpoint written stays.
"""

from __future__ import annotations

import importlib
import math
import os
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from ignite.engine import Engine, Events

from brats_cggm.core.distributed import get_world_size, is_main_process
from brats_cggm.core.files import atomic_write, remove_stale_temporaries
from brats_cggm.core.safe_load import WeightsLoadError, load_tensors

__all__ = [
    "BestModelSaver",
    "CheckpointLoadError",
    "TrainingCheckpointSaver",
    "atomic_torch_save",
    "capture_rng_state",
    "load_checkpoint",
    "non_finite_entries",
    "previous_checkpoint_path",
    "restore_rng_state",
    "validation_objects",
]


class CheckpointLoadError(RuntimeError):
    """Neither the checkpoint asked for nor the previous one could be loaded."""


def previous_checkpoint_path(path: str | os.PathLike) -> Path:
    """Where a save keeps the checkpoint it replaces: ``checkpoint.pt`` → ``checkpoint.prev.pt``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def atomic_torch_save(obj: Any, path: str | os.PathLike, keep_previous: bool = False) -> Path:
    """``torch.save`` to a temporary file in the target folder, fsync, then rename over ``path``.

    See :func:`brats_cggm.core.files.atomic_write` (file mode, temporary file names).

    Args:
        obj: what to save.
        path: the target file.
        keep_previous: move an existing ``path`` to :func:`previous_checkpoint_path` first, so that a
            checkpoint later found damaged still has a predecessor.

    Returns:
        ``path``.
    """
    path = Path(path)

    def keep() -> None:
        if keep_previous and path.exists():
            os.replace(path, previous_checkpoint_path(path))

    return atomic_write(path, lambda f: torch.save(obj, f), before_replace=keep)


def load_checkpoint(
    path: str | os.PathLike, map_location: Any = "cpu", fallback: bool = True, required_keys: tuple[str, ...] = ()
) -> tuple[dict[str, Any], Path]:
    """Load a checkpoint, or its predecessor (with a warning) when it is missing, truncated or unreadable.

    A file cut short fails ``torch.load`` (a zip archive's directory is at its end); a file that loads
    but lacks ``required_keys`` is rejected too, and so is one holding anything but tensors, plain
    python types and numpy arrays (a pickled object could run code: it is refused, never unpickled).

    Args:
        path: the checkpoint file.
        map_location: passed to ``torch.load``.
        fallback: try :func:`previous_checkpoint_path` when ``path`` cannot be used.
        required_keys: entries a usable checkpoint has.

    Returns:
        The loaded dict and the file it came from.

    Raises:
        FileNotFoundError: no candidate file exists.
        CheckpointLoadError: candidates exist but none could be loaded.
    """
    path = Path(path)
    candidates = [path, previous_checkpoint_path(path)] if fallback else [path]
    problems: list[str] = []
    for candidate in candidates:
        if not candidate.is_file():
            problems.append(f"{candidate}: missing")
            continue
        try:
            # tensors and plain types only: a checkpoint is data, never code (numpy arrays: older RNG states)
            obj = load_tensors(candidate, map_location=map_location, allowed_globals=_numpy_array_globals())
        except WeightsLoadError as exc:  # refused (more than data), truncated zip, I/O error
            problems.append(str(exc))
            continue
        missing = [k for k in required_keys if not (isinstance(obj, dict) and k in obj)]
        if missing:
            problems.append(f"{candidate}: not a training checkpoint (no {missing})")
            continue
        if candidate != path:
            warnings.warn(f"checkpoint unusable ({problems[0]}); using the previous one, {candidate}", stacklevel=2)
        return obj, candidate
    if all(p.endswith(": missing") for p in problems):
        raise FileNotFoundError(f"no checkpoint at {path}" + (" nor at its predecessor" if fallback else ""))
    raise CheckpointLoadError("no loadable checkpoint: " + "; ".join(problems))


def _numpy_array_globals() -> list[Any]:
    """What a pickled numpy array needs: checkpoints written before the RNG states became tensors hold some."""
    try:
        multiarray = importlib.import_module("numpy._core.multiarray")
    except ImportError:  # numpy < 2
        multiarray = importlib.import_module("numpy.core.multiarray")
    return [multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def _random_transforms(dataset: Any) -> list[Any]:
    """The MONAI ``Randomizable`` objects of ``dataset.transform``, nested ones included, each generator once.

    A dictionary transform keeps its array transform as an attribute with a generator of its own (e.g.
    ``RandGaussianNoised.rand_gaussian_noise``), so the walk goes through attributes, in a fixed order.
    """
    from monai.transforms import Randomizable, Transform

    found: list[Any] = []
    seen: set[int] = set()

    def visit(obj: Any) -> None:
        if isinstance(obj, list | tuple):
            for item in obj:
                visit(item)
        elif isinstance(obj, Transform | Randomizable) and id(obj) not in seen:
            seen.add(id(obj))
            if isinstance(obj, Randomizable) and id(obj.R) not in seen:
                seen.add(id(obj.R))
                found.append(obj)
            for value in vars(obj).values():
                visit(value)

    visit(getattr(dataset, "transform", None))
    return found


def _numpy_state_to_plain(state: tuple | dict[str, Any]) -> dict[str, Any]:
    # a numpy array does not load with weights_only=True; a tensor does
    if isinstance(state, dict):  # get_state(legacy=True) gives one only for a generator other than MT19937
        raise TypeError(f"numpy random state of {state.get('bit_generator')}: expected the legacy MT19937 tuple")
    name, keys, position, has_gauss, cached_gaussian = state
    return {
        "name": str(name),
        "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "position": int(position),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached_gaussian),
    }


def _numpy_state_from_plain(state: dict[str, Any] | tuple) -> tuple:
    if isinstance(state, tuple):  # written before the states became tensors
        return state
    keys = np.asarray(state["keys"].cpu().numpy(), dtype=np.uint32)
    return state["name"], keys, state["position"], state["has_gauss"], state["cached_gaussian"]


def capture_rng_state(dataset: Any = None) -> dict[str, Any]:
    """This process's RNG states: python, numpy, torch, CUDA, and those of ``dataset``'s random transforms.

    Everything is a tensor or a plain python type, so the checkpoint loads with ``weights_only=True``.
    """
    return {
        "python": random.getstate(),
        "numpy": _numpy_state_to_plain(np.random.get_state()),  # noqa: NPY002 (libraries draw from the global one)
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "transforms": [_numpy_state_to_plain(t.R.get_state()) for t in _random_transforms(dataset)],
    }


def restore_rng_state(state: dict[str, Any], dataset: Any = None) -> None:
    """Restore what :func:`capture_rng_state` returned (transform states only into the same pipeline)."""
    random.setstate(state["python"])
    np.random.set_state(_numpy_state_from_plain(state["numpy"]))  # noqa: NPY002
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") is not None and torch.cuda.is_available():
        if len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    transforms, saved = _random_transforms(dataset), state.get("transforms") or []
    if len(transforms) != len(saved):
        warnings.warn(
            f"the training data holds {len(transforms)} random transforms, the checkpoint {len(saved)}: "
            "their states are not restored",
            stacklevel=2,
        )
        return
    for transform, transform_state in zip(transforms, saved):
        transform.R.set_state(_numpy_state_from_plain(transform_state))


def non_finite_entries(named_states: dict[str, Any]) -> list[str]:
    """The entries (``name.key``) of state dicts that hold a floating point tensor with a NaN or an infinity.

    Args:
        named_states: name → a state dict (possibly nested: an optimizer's ``state`` and ``param_groups``).

    Returns:
        The entries at fault, at most a handful, in order.
    """
    found: list[str] = []

    def visit(prefix: str, value: Any) -> None:
        if len(found) >= 5:
            return
        if isinstance(value, torch.Tensor):
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                found.append(prefix)
        elif isinstance(value, dict):
            for key, item in value.items():
                visit(f"{prefix}.{key}", item)
        elif isinstance(value, list | tuple):
            for index, item in enumerate(value):
                visit(f"{prefix}.{index}", item)

    for name, state in named_states.items():
        visit(name, state)
    return found


def _weight_states(save_dict: dict[str, Any]) -> dict[str, Any]:
    """The state dicts of the networks and optimizers among ``save_dict`` (what must never be non-finite)."""
    return {
        name: obj.state_dict()
        for name, obj in save_dict.items()
        if isinstance(obj, torch.nn.Module | torch.optim.Optimizer)
    }


def _refuse_non_finite(named_states: dict[str, Any], when: str, path: Path) -> None:
    bad = non_finite_entries(named_states)
    if bad:
        raise FloatingPointError(
            f"non-finite values in {', '.join(bad)} {when}: training stopped, {path} not written "
            "(the last one written stays)"
        )


def _all_gather(obj: Any) -> list[Any]:
    """``[rank 0's obj, rank 1's obj, ...]`` on every rank (``[obj]`` in a single process)."""
    if get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def _registered(engine: Engine, kind: type) -> list[Any]:
    found = []
    for handlers in engine._event_handlers.values():
        for handler, _, _ in handlers:
            handler = getattr(handler, "__wrapped__", handler)  # ignite wraps filtered events
            handler = getattr(handler, "__self__", handler)  # bound methods
            if isinstance(handler, kind) and handler not in found:
                found.append(handler)
    return found


def validation_objects(trainer: Engine) -> tuple[Engine | None, list[BestModelSaver]]:
    """The evaluator of the trainer's ``ValidationHandler`` and the :class:`BestModelSaver` attached to it."""
    from monai.handlers import ValidationHandler

    evaluators = [h.validator for h in _registered(trainer, ValidationHandler) if h.validator is not None]
    if not evaluators:
        return None, []
    return evaluators[0], _registered(evaluators[0], BestModelSaver)


class TrainingCheckpointSaver:
    """Saves everything needed to resume exactly to one file, atomically; only rank 0 writes.

    Written every ``interval`` epochs and when training completes. Besides ``save_dict``'s state dicts
    the file holds ``rng`` (one :func:`capture_rng_state` per rank, gathered, so the handler must run
    on every rank) and ``validation`` (the evaluator's best metric and epoch, the :class:`BestModelSaver`
    states). The events are registered when the run starts, so that they run after every handler
    registered when the trainer was built (LR schedule, validation, the balancer's epoch hook): the
    saved state is the state at the start of the next epoch. The replaced file is kept as
    ``checkpoint.prev.pt`` (see :func:`load_checkpoint`), unless it failed to load
    (:meth:`mark_current_unusable`). Weights or optimizer states holding a NaN or an infinity are not
    written: a ``FloatingPointError`` stops training (on every rank). Temporary files of writes killed
    in an earlier run are removed when the run starts.

    Args:
        save_path: the checkpoint file.
        save_dict: name → object with ``state_dict`` (network, heads, optimizers, balancer, ...); the
            engine the handler is attached to is added as ``"trainer"`` (epoch and iteration).
        interval: epochs between saves; 0 saves only at the end.
    """

    def __init__(self, save_path: str | os.PathLike, save_dict: dict[str, Any], interval: int = 1) -> None:
        self.save_path = Path(save_path)
        self.save_dict = save_dict
        self.interval = int(interval)
        self._last_saved: int | None = None
        self._registered = False
        self._current_unusable = False

    def attach(self, engine: Engine) -> None:
        self.save_dict = {**self.save_dict, "trainer": engine}
        engine.add_event_handler(Events.STARTED, self._register)

    def _register(self, engine: Engine) -> None:
        if self._registered:  # a resumed or repeated run fires STARTED again
            return
        self._registered = True
        if is_main_process():
            remove_stale_temporaries(self.save_path)
        if self.interval > 0:
            engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self)
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if self._last_saved == engine.state.iteration:  # the last epoch's save is also the final one
            return
        self._last_saved = engine.state.iteration
        # on every rank (DDP keeps the replicas identical), so that all stop together
        when = f"at epoch {engine.state.epoch}, iteration {engine.state.iteration}"
        _refuse_non_finite(_weight_states(self.save_dict), when, self.save_path)
        rng = _all_gather(capture_rng_state(getattr(getattr(engine, "data_loader", None), "dataset", None)))
        if not is_main_process():
            return
        payload = {name: obj.state_dict() for name, obj in self.save_dict.items()}
        payload["rng"] = rng
        evaluator, savers = validation_objects(engine)
        if evaluator is not None:
            payload["validation"] = {
                "best_metric": getattr(evaluator.state, "best_metric", None),
                "best_metric_epoch": getattr(evaluator.state, "best_metric_epoch", None),
                "best_model_savers": [s.state_dict() for s in savers],
            }
        # a file that failed to load must not become the predecessor: the predecessor is the good one
        atomic_torch_save(payload, self.save_path, keep_previous=not self._current_unusable)
        self._current_unusable = False

    def mark_current_unusable(self) -> None:
        """Make the next save replace ``save_path`` instead of keeping it as ``checkpoint.prev.pt``.

        Called when that file failed to load and resuming fell back to its predecessor: the checkpoint
        that did load stays the predecessor.
        """
        self._current_unusable = True


class BestModelSaver:
    """Saves the network's weights whenever the evaluator's key metric improves (``models/model.pt``).

    Weights holding a NaN or an infinity are never saved: a ``FloatingPointError`` stops training instead.

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
        # attached on every rank (so a resume restores ``best`` everywhere); only rank 0 writes
        if is_main_process():
            remove_stale_temporaries(self.save_path)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        name = self.metric_name or getattr(engine.state, "key_metric_name", None)
        if name is None:
            raise ValueError("no metric to track: pass metric_name, or set the evaluator's key metric")
        value = float(engine.state.metrics[name])
        if value > self.best:
            state = self.network.state_dict()
            _refuse_non_finite({"network": state}, f"after epoch {engine.state.epoch}", self.save_path)
            self.best = value
            if is_main_process():
                atomic_torch_save(state, self.save_path)

    def state_dict(self) -> dict[str, float]:
        return {"best": self.best}

    def load_state_dict(self, state_dict: dict[str, float]) -> None:
        self.best = float(state_dict["best"])
