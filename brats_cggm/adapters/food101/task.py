"""Food-101 as a task of the engine: cross-entropy over 101 classes; accuracy, macro and weighted F1."""

from __future__ import annotations

from collections.abc import Sequence

from brats_cggm.adapters.common import ClassificationTask

__all__ = ["Food101ClassificationTask"]


class Food101ClassificationTask(ClassificationTask):
    """101 classes; evaluation: accuracy (key metric), macro F1 and weighted F1; ε = batch accuracy."""

    def __init__(
        self, num_classes: int = 101, metric_names: Sequence[str] = ("accuracy", "f1_macro", "f1_weighted")
    ) -> None:
        super().__init__(num_classes, metric_names)
