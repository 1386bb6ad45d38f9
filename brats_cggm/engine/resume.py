"""Resuming training from a :class:`~brats_cggm.engine.checkpoint.TrainingCheckpointSaver` checkpoint.

``--resume true`` (the bundle's ``resume`` key) continues from the saver's file
(``output_dir/models/checkpoint.pt``) when it exists and starts afresh otherwise, so a requeued job can
always pass it; ``--resume PATH`` continues from that file and fails when it cannot. Restored: the
network, the auxiliary heads, both optimizers, the LR scheduler, the balancer, the trainer's epoch and
iteration, the validation bookkeeping and every rank's RNG states. Checkpoints are written at epoch
ends, so with the same world size, data and configuration a resumed run continues exactly as the
uninterrupted run would have; a run killed mid-epoch repeats that epoch from its start.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch.distributed as dist
from ignite.engine import Engine, Events

from brats_cggm.core.distributed import get_rank, get_world_size, is_main_process
from brats_cggm.engine.checkpoint import (
    TrainingCheckpointSaver,
    load_checkpoint,
    previous_checkpoint_path,
    restore_rng_state,
    validation_objects,
)

__all__ = ["resolve_resume_path", "resume_from_checkpoint"]

logger = logging.getLogger(__name__)

_OFF = {"", "0", "false", "no", "none", "null", "off"}
_AUTO = {"1", "true", "yes", "on", "auto", "latest"}


def resolve_resume_path(resume: Any, default_path: str | os.PathLike) -> tuple[Path | None, bool]:
    """``(path, required)`` for a ``resume`` setting.

    Args:
        resume: False/None/"false" (start afresh), True/"true"/"auto" (``default_path`` if it exists),
            or a checkpoint path (must load).
        default_path: the training checkpoint of this run.

    Returns:
        The file to resume from (None: start afresh) and whether failing to load it is an error.
    """
    if resume is None or resume is False:
        return None, False
    text = "true" if resume is True else str(resume).strip()
    if text.lower() in _OFF:
        return None, False
    if text.lower() in _AUTO:
        return Path(default_path), False
    return Path(text).expanduser(), True


def _load_on_every_rank(path: Path, required: bool, map_location: Any) -> tuple[dict | None, Path | None]:
    """Rank 0 picks the file (falling back to the previous checkpoint); every rank loads that file.

    Rank 0's decision, or its error, is broadcast, so that no rank waits for ever on one that failed.
    """
    decision: list[Any] = [None]  # the file, or the exception rank 0 got
    checkpoint = None
    if is_main_process():
        try:
            checkpoint, used = load_checkpoint(path, map_location=map_location, required_keys=("trainer",))
            decision = [str(used)]
        except FileNotFoundError as exc:
            decision = [exc if required else None]
        except Exception as exc:  # damaged files: every rank stops with rank 0's message
            decision = [exc]
    if get_world_size() > 1:
        dist.broadcast_object_list(decision, src=0)
    if isinstance(decision[0], Exception):
        raise decision[0]
    if decision[0] is None:
        return None, None
    if checkpoint is None:  # ranks > 0 (a multi-node run needs output_dir on a shared file system)
        checkpoint, _ = load_checkpoint(decision[0], map_location=map_location, fallback=False)
    return checkpoint, Path(decision[0])


def resume_from_checkpoint(
    resume: Any, handlers: Sequence[Any], trainer: Engine, map_location: Any = "cpu"
) -> Path | None:
    """Load a training checkpoint into the objects of ``handlers``' checkpoint saver and into the trainer.

    Called in the bundle's ``initialize`` on every rank, after the process group exists. The objects
    restored are those the :class:`TrainingCheckpointSaver` among ``handlers`` saves (so what is saved and
    what is loaded cannot drift apart), and its ``save_path`` is the default checkpoint. The RNG states
    are restored when the run starts, before its first data loader iterator is created.

    Args:
        resume: see :func:`resolve_resume_path`.
        handlers: the training handlers, one of them a :class:`TrainingCheckpointSaver`.
        trainer: the training engine, already built.
        map_location: ``torch.load``'s map_location (state dicts are copied onto the objects' devices).

    Returns:
        The checkpoint file used, or None when training starts afresh.

    Raises:
        ValueError: ``resume`` is set but no :class:`TrainingCheckpointSaver` is among ``handlers``, the
            checkpoint lacks one of the saver's entries, or it is already at the end of the configured epochs.
        FileNotFoundError: an explicit checkpoint path does not exist.
        CheckpointLoadError: no loadable checkpoint.
    """
    savers = [h for h in handlers or [] if isinstance(h, TrainingCheckpointSaver)]
    path, required = resolve_resume_path(resume, savers[0].save_path if savers else "")
    if path is None:
        return None
    if not savers:
        raise ValueError(f"resume={resume!r} needs a TrainingCheckpointSaver among the training handlers")
    checkpoint, used = _load_on_every_rank(path, required, map_location)
    if checkpoint is None or used is None:
        logger.info("no checkpoint at %s: training starts afresh", path)
        return None
    if used == previous_checkpoint_path(savers[0].save_path):
        savers[0].mark_current_unusable()
    for name, obj in savers[0].save_dict.items():
        if name == "trainer":
            continue
        if name not in checkpoint:
            raise ValueError(f"checkpoint {used} has no {name!r} entry (saved by another configuration?)")
        obj.load_state_dict(checkpoint[name])
    _load_trainer_state(trainer, checkpoint["trainer"], used)
    _restore_validation(trainer, checkpoint.get("validation"))
    _restore_rng_at_start(trainer, checkpoint.get("rng"), used)
    logger.info("resumed from %s at epoch %d, iteration %d", used, trainer.state.epoch, trainer.state.iteration)
    return used


def _load_trainer_state(trainer: Engine, state: dict[str, Any], used: Path) -> None:
    state = dict(state)
    length, saved_length = trainer.state.epoch_length, int(state["epoch_length"])
    epoch = int(state["iteration"]) // saved_length
    if length is not None and (saved_length != length or int(state["iteration"]) % saved_length):
        warnings.warn(
            f"checkpoint {used}: iteration {state['iteration']} with {saved_length} iterations per epoch, this run "
            f"has {length} (another world size or batch size?): resuming at the start of epoch {epoch + 1}, "
            "not exactly",
            stacklevel=3,
        )
        state["iteration"], state["epoch_length"] = epoch * length, length
    # the configured number of epochs wins, so a finished run can be extended with --max_epochs
    state.pop("max_iters", None)
    max_epochs = trainer.state.max_epochs
    state["max_epochs"] = max_epochs
    if max_epochs is not None and epoch >= max_epochs:
        raise ValueError(
            f"checkpoint {used} is at epoch {epoch}, the end of the configured {max_epochs} "
            "epochs: raise max_epochs to train further"
        )
    trainer.load_state_dict(state)


def _restore_validation(trainer: Engine, state: dict[str, Any] | None) -> None:
    evaluator, savers = validation_objects(trainer)
    if evaluator is None or not state:
        return
    for key in ("best_metric", "best_metric_epoch"):
        if state.get(key) is not None:
            setattr(evaluator.state, key, state[key])
    for saver, saver_state in zip(savers, state.get("best_model_savers") or []):
        saver.load_state_dict(saver_state)


def _restore_rng_at_start(trainer: Engine, per_rank: list[dict] | None, used: Path) -> None:
    if not per_rank:
        warnings.warn(f"checkpoint {used} holds no RNG states: resumption is not exact", stacklevel=3)
        return
    if len(per_rank) != get_world_size():
        warnings.warn(
            f"checkpoint {used} was written by {len(per_rank)} rank(s), this run has {get_world_size()}: "
            "data order and augmentation differ from the interrupted run",
            stacklevel=3,
        )
    state = per_rank[get_rank() % len(per_rank)]
    dataset = getattr(getattr(trainer, "data_loader", None), "dataset", None)

    pending = [state]

    def restore(engine: Engine) -> None:
        if pending:  # once: not when the trainer is run again
            restore_rng_state(pending.pop(), dataset)

    trainer.add_event_handler(Events.STARTED, restore)
