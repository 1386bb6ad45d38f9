"""The sequence tasks' predictions file: what the multimodal bundle's inference writes for each item of a split.

``bundles/multimodal_cggm/configs/inference.yaml`` runs the trained network (``models/model.pt``) over the
validation or test split of a task's data set; :class:`PredictionsWriter`, a handler of that evaluator, writes
``predictions.csv``: one row per item, in the split's order, with the prediction (the class and its name for
classification, the score for regression), the label and the network's outputs.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from brats_cggm.core.files import atomic_write_text, refuse_existing

__all__ = ["PredictionsWriter", "prediction_rows"]


def prediction_rows(
    outputs: torch.Tensor, labels: torch.Tensor | None = None, class_names: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """One row per item: the prediction of the network's outputs, and the label when there is one.

    Args:
        outputs: the network's outputs, ``(N, C)`` logits of ``C > 1`` classes or ``(N, 1)`` / ``(N,)`` scores.
        labels: the items' labels (class indices or scores), or None.
        class_names: the class names (index = class), for classification.

    Returns:
        ``[{"index", "prediction", ("class_name",) ("label",) "output_0", ...}, ...]``: the prediction is the
        arg-max class for classification and the score for regression.
    """
    outputs = outputs.detach().float().cpu().reshape(len(outputs), -1)
    classification = outputs.shape[1] > 1
    predicted = outputs.argmax(1) if classification else outputs[:, 0]
    label_values = None if labels is None else labels.detach().cpu().reshape(len(outputs), -1)[:, 0]
    rows = []
    for i in range(len(outputs)):
        row: dict[str, Any] = {"index": i}
        row["prediction"] = int(predicted[i]) if classification else float(predicted[i])
        if classification and class_names:
            row["class_name"] = class_names[int(predicted[i])]
        if label_values is not None:
            row["label"] = int(label_values[i]) if classification else float(label_values[i])
        row.update({f"output_{k}": float(v) for k, v in enumerate(outputs[i])})
        rows.append(row)
    return rows


class PredictionsWriter:
    """Handler of an evaluator (``decollate=False``): collects each batch's outputs, writes the CSV at the end.

    Args:
        output_dir: the folder of the file (created when the file is written, not before).
        class_names: the class names (index = class) for classification; empty for regression.
        filename: the file name inside ``output_dir``.
        overwrite: replace an existing file; without it a run that would replace one is refused at its start.
        output_key: the key of the network's outputs in the engine's output (a ``{"pred": ...}`` mapping).
    """

    def __init__(
        self,
        output_dir: str | Path,
        class_names: Sequence[str] = (),
        filename: str = "predictions.csv",
        overwrite: bool = False,
        output_key: str = "pred",
    ) -> None:
        self.path = Path(output_dir) / filename
        self.class_names = tuple(class_names)
        self.overwrite = overwrite
        self.output_key = output_key
        self._outputs: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self.start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.COMPLETED, self.write)

    def start(self, engine: Any) -> None:
        """Refuses a run that would replace an existing file (before any item is predicted)."""
        refuse_existing([self.path], self.overwrite)
        self._outputs, self._labels = [], []

    def collect(self, engine: Any) -> None:
        """Keeps the batch's outputs and labels (on the CPU)."""
        output = engine.state.output
        self._outputs.append(output[self.output_key].detach().cpu())
        label = output.get("label") if isinstance(output, dict) else None
        if label is not None:
            self._labels.append(torch.as_tensor(label).detach().cpu())

    def write(self, engine: Any) -> Path:
        """Writes the collected rows to ``output_dir/filename`` (atomically)."""
        outputs = torch.cat([o.reshape(len(o), -1) for o in self._outputs]) if self._outputs else torch.zeros(0, 1)
        labels = torch.cat([t.reshape(len(t), -1) for t in self._labels]) if len(self._labels) else None
        rows = prediction_rows(
            outputs, labels if labels is not None and len(labels) == len(outputs) else None, self.class_names
        )
        text = io.StringIO()
        fields = list(rows[0]) if rows else ["index", "prediction"]
        writer = csv.DictWriter(text, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write_text(self.path, text.getvalue())
