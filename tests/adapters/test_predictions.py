"""The multimodal bundle's predictions file: rows of classification and regression outputs; no silent overwrite."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from brats_cggm.adapters.predictions import PredictionsWriter, prediction_rows


def test_classification_rows_name_the_arg_max_class_and_keep_the_label():
    logits = torch.tensor([[0.1, 2.0, -1.0], [3.0, 0.0, 0.5]])
    rows = prediction_rows(logits, torch.tensor([1, 2]), class_names=("neutral", "happy", "sad"))
    assert [(r["prediction"], r["class_name"], r["label"]) for r in rows] == [(1, "happy", 1), (0, "neutral", 2)]
    assert rows[1]["output_2"] == pytest.approx(0.5)


def test_regression_rows_hold_the_score():
    rows = prediction_rows(torch.tensor([[0.25], [-1.5]]))
    assert [r["prediction"] for r in rows] == [0.25, -1.5] and "label" not in rows[0]


def test_the_writer_collects_batches_and_refuses_to_replace_a_file(tmp_path):
    writer = PredictionsWriter(tmp_path / "out", class_names=("a", "b"))
    engine = SimpleNamespace(state=SimpleNamespace(output=None))
    writer.start(engine)
    assert not (tmp_path / "out").exists()  # nothing before the end of the run
    for pred, label in (([[0.0, 1.0], [2.0, 0.0]], [1, 1]), ([[0.0, 3.0]], [0])):
        engine.state.output = {"pred": torch.tensor(pred), "label": torch.tensor(label)}
        writer.collect(engine)
    path = writer.write(engine)
    assert path.read_text().splitlines() == [
        "index,prediction,class_name,label,output_0,output_1",
        "0,1,b,1,0.0,1.0",
        "1,0,a,1,2.0,0.0",
        "2,1,b,0,0.0,3.0",
    ]
    with pytest.raises(FileExistsError, match="--overwrite"):
        PredictionsWriter(tmp_path / "out").start(engine)
