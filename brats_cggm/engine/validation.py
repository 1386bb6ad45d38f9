"""Validation helpers: when to validate, and predictions that come as a dict (fused + one per auxiliary head)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

from ignite.engine import Engine, Events
from monai.config import KeysCollection
from monai.handlers import ValidationHandler
from monai.transforms import MapTransform

from brats_cggm.core.allocator import trim_heap

__all__ = ["EpochValidationHandler", "ReleaseIterationData", "UnpackPredictionsd"]


class EpochValidationHandler(ValidationHandler):
    """Validates every ``interval`` epochs and after the last epoch, whether or not ``interval`` divides it.

    A run whose ``max_epochs`` is not a multiple of ``interval`` thus still ends with a validation
    metric (and a best model). The last epoch is read when each epoch ends, so a resumed run with a
    larger ``max_epochs`` validates at its own end.

    Args:
        interval: validate every ``interval`` epochs.
        validator: the evaluator, run with the trainer's epoch.
        exec_at_start: also validate before the first epoch.
    """

    def __init__(self, interval: int, validator: Any = None, exec_at_start: bool = False) -> None:
        super().__init__(interval=interval, validator=validator, epoch_level=True, exec_at_start=exec_at_start)

    def _due(self, engine: Engine, epoch: int) -> bool:
        return epoch % self.interval == 0 or epoch == engine.state.max_epochs

    def attach(self, engine: Engine) -> None:
        """Register the validation on ``engine``'s epoch ends (and at its start with ``exec_at_start``).

        Args:
            engine: the trainer.
        """
        engine.add_event_handler(Events.EPOCH_COMPLETED(event_filter=self._due), self)
        if self.exec_at_start:
            engine.add_event_handler(Events.STARTED, self)


class UnpackPredictionsd(MapTransform):
    """Moves the entries of the dict under each key to the top level, replacing that key.

    A predictor returning ``{"pred": fused, "pred_flair": ..., ...}`` under ``"pred"`` (as a sliding
    window over a network and its auxiliary heads does) becomes top-level ``pred``, ``pred_flair``, ...
    """

    def __init__(self, keys: KeysCollection = "pred") -> None:
        super().__init__(keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            if isinstance(d[key], Mapping):
                d.update(d.pop(key))
        return d


class ReleaseIterationData:
    """Frees each iteration's batch and output once the iteration's handlers have read them.

    Two things kept a validation case's memory alive into the next case, measured on full-size cases
    (docs/performance.md, dataset_scale section):

    - an ignite engine keeps the last ``state.batch`` and ``state.output`` until the next iteration replaces
      them, so the previous case's whole volumes (image, labels and postprocessed predictions, about 85 bytes
      per voxel) were alive while the next case was loaded and predicted, and after the last case they stayed
      alive through the following training epoch;
    - glibc raises its mmap threshold (up to 32 MiB) each time a large block is freed, after which blocks of
      the sliding window's size come from the heap and stay there, fragmented, once freed: each further case
      raised the peak until it levelled off. ``malloc_trim(0)`` hands the freed heap pages back.

    Attach it after the metrics and the other handlers that read the output (a bundle's ``val_handlers``
    are attached after its metrics; list it last).

    Args:
        trim: call glibc's ``malloc_trim(0)`` after dropping the references (nothing where there is no glibc).
    """

    def __init__(self, trim: bool = True) -> None:
        self.trim = trim

    def attach(self, engine: Engine) -> None:
        """Register the release on ``engine``'s iteration ends, after the handlers registered before it.

        Args:
            engine: the evaluator (or any engine whose batches are large).
        """
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        """Drop the references, then return the freed heap pages to the kernel.

        Args:
            engine: the engine whose iteration just completed.
        """
        engine.state.batch = None
        engine.state.output = None
        if self.trim:
            trim_heap()
