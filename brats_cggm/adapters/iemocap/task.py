"""IEMOCAP as a task of the engine: four-class cross-entropy; ε = batch accuracy; accuracy and F1."""

from __future__ import annotations

from collections.abc import Sequence

from brats_cggm.adapters.common import ClassificationTask

__all__ = ["IemocapClassificationTask"]


class IemocapClassificationTask(ClassificationTask):
    """Four emotion classes; evaluation: accuracy (key metric), weighted F1 and macro F1."""

    def __init__(
        self, num_classes: int = 4, metric_names: Sequence[str] = ("accuracy", "f1_weighted", "f1_macro")
    ) -> None:
        super().__init__(num_classes, metric_names)
