"""The sequence tasks' ``metrics.json``: the validation metrics and the test split's, with the best weights."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from brats_cggm.core.safe_load import load_tensors
from brats_cggm.engine.handlers import MetricsJSONWriter, is_scalar, to_float

__all__ = ["MetricsWithTestJSONWriter"]


class MetricsWithTestJSONWriter(MetricsJSONWriter):
    """:class:`MetricsJSONWriter` that first evaluates the test split and adds ``"test"`` to ``metrics.json``.

    When training completes, the best-validation weights (``test_checkpoint="best"``) are loaded, the
    test evaluator runs, and the final weights are put back, so that whatever saves the network after
    this handler (the training checkpoint) still sees the trained state. The test run happens on every
    rank (its metrics gather over ranks); only the main process writes the file.

    Args:
        output_dir: the run's output folder.
        evaluator: the validation evaluator.
        test_evaluator: the test evaluator (None: no test entry).
        best_weights: ``[(path, module), ...]`` (or a ``{path: module}`` dict): the best-validation
            weights loaded before the test run when ``test_checkpoint="best"`` and every file exists.
        test_checkpoint: ``"best"`` (best validation weights) or ``"last"`` (the final weights).
        extra: more entries for the file; callable values are called when the file is written.
        filename: the file name inside ``output_dir``.
    """

    def __init__(
        self,
        output_dir: str | Path,
        evaluator: Any,
        test_evaluator: Any = None,
        best_weights: Mapping[str, nn.Module] | Sequence[Sequence[Any]] | None = None,
        test_checkpoint: str = "best",
        extra: dict | None = None,
        filename: str = "metrics.json",
    ) -> None:
        super().__init__(output_dir, evaluator, extra=extra, filename=filename)
        if test_checkpoint not in ("best", "last"):
            raise ValueError(f"test_checkpoint must be 'best' or 'last', got {test_checkpoint!r}")
        self.test_evaluator = test_evaluator
        # a list of (path, module) pairs too: bundle configs do not evaluate dict keys
        items = best_weights.items() if isinstance(best_weights, Mapping) else (best_weights or [])
        self.best_weights = [(Path(path), module) for path, module in items]
        self.test_checkpoint = test_checkpoint

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        # registered before the writer, so the test metrics exist when the file is written
        engine.add_event_handler(Events.COMPLETED, self.run_test)
        super().attach(engine)

    def run_test(self, engine: Any) -> None:
        """Evaluates the test split (best or last weights) and keeps its metrics for the file."""
        if self.test_evaluator is None:
            return
        used, saved = "last", None
        if self.test_checkpoint == "best":
            if self.best_weights and all(path.is_file() for path, _ in self.best_weights):
                saved = [{k: v.detach().clone() for k, v in m.state_dict().items()} for _, m in self.best_weights]
                for path, module in self.best_weights:
                    module.load_state_dict(load_tensors(path))
                used = "best"
            else:
                missing = [str(p) for p, _ in self.best_weights if not p.is_file()] or ["(none configured)"]
                warnings.warn(f"no best-validation weights {missing}; testing the final weights", stacklevel=2)
        try:
            self.test_evaluator.run(global_epoch=engine.state.epoch)
        finally:
            if saved is not None:  # the final weights go back: later handlers save the trained state
                for (_, module), state in zip(self.best_weights, saved):
                    module.load_state_dict(state)
        state = self.test_evaluator.state
        self.extra["test"] = {k: to_float(v) for k, v in state.metrics.items() if is_scalar(v)}
        self.extra["test_checkpoint"] = used

    def __call__(self, engine: Any) -> None:
        # entries given as callables (e.g. the data's report: images skipped during training) are read now
        static = self.extra
        self.extra = {k: (v() if callable(v) else v) for k, v in static.items()}
        try:
            super().__call__(engine)
        finally:
            self.extra = static
