"""EpochValidationHandler (every interval and after the last epoch) and UnpackPredictionsd."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine

from brats_cggm.engine.validation import EpochValidationHandler, UnpackPredictionsd


class RecordingValidator:
    """Stands in for the evaluator (``ValidationHandler`` calls ``run(epoch)``)."""

    def __init__(self) -> None:
        self.epochs: list[int] = []

    def run(self, epoch: int) -> None:
        self.epochs.append(epoch)


def _handler(interval: int, validator: RecordingValidator, exec_at_start: bool = False) -> EpochValidationHandler:
    handler = EpochValidationHandler(interval, exec_at_start=exec_at_start)
    handler.validator = validator  # set_validator accepts MONAI evaluators only
    return handler


@pytest.mark.parametrize(
    "interval,max_epochs,exec_at_start,expected",
    [
        (2, 6, False, [2, 4, 6]),
        (2, 5, False, [2, 4, 5]),  # the last epoch although 2 does not divide 5
        (10, 3, False, [3]),
        (1, 3, False, [1, 2, 3]),
        (3, 4, True, [0, 3, 4]),  # before the first epoch, then as usual
    ],
)
def test_validates_every_interval_and_after_the_last_epoch(interval, max_epochs, exec_at_start, expected):
    validator = RecordingValidator()
    trainer = Engine(lambda engine, batch: None)
    _handler(interval, validator, exec_at_start=exec_at_start).attach(trainer)
    trainer.run(range(2), max_epochs=max_epochs)
    assert validator.epochs == expected


def test_a_resumed_run_with_more_epochs_validates_at_its_own_end():
    validator = RecordingValidator()
    trainer = Engine(lambda engine, batch: None)
    _handler(4, validator).attach(trainer)
    trainer.run(range(2), max_epochs=3)
    trainer.run(range(2), max_epochs=5)  # ignite continues from epoch 3
    assert validator.epochs == [3, 4, 5]


def test_unpack_predictions():
    fused, flair = torch.zeros(3, 2), torch.ones(3, 2)
    data = {"pred": {"pred": fused, "pred_flair": flair}, "label": "kept"}
    out = UnpackPredictionsd()(data)
    assert set(out) == {"pred", "pred_flair", "label"} and out["pred"] is fused and out["pred_flair"] is flair
    assert isinstance(data["pred"], dict)  # the input is left as it was
    plain = {"pred": fused}
    assert UnpackPredictionsd()(plain) == plain  # a tensor prediction passes through
    assert UnpackPredictionsd(keys="out")({"out": {"a": 1}, "pred": {"b": 2}}) == {"a": 1, "pred": {"b": 2}}
