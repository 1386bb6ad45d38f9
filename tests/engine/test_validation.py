"""EpochValidationHandler (every interval and after the last epoch), UnpackPredictionsd, ReleaseIterationData."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from ignite.engine import Engine, Events

from brats_cggm.engine.validation import EpochValidationHandler, ReleaseIterationData, UnpackPredictionsd


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


def test_release_frees_each_output_before_the_next_iteration_and_after_the_last():
    class Output(dict):  # a dict that a weak reference can follow
        pass

    alive: list = []
    seen: list[int] = []

    def step(engine, batch):
        return Output(pred=torch.full((4,), float(batch)))

    engine = Engine(step)
    # a metric-like reader, registered first as a bundle's metrics are: it must still see each output
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(int(e.state.output["pred"][0])))
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: alive.append(weakref.ref(e.state.output)))
    ReleaseIterationData().attach(engine)
    # at each iteration's start, no earlier output may still be alive
    engine.add_event_handler(Events.ITERATION_STARTED, lambda e: [assert_dead(r) for r in alive])
    engine.run([1, 2, 3], max_epochs=1)
    assert seen == [1, 2, 3]
    assert engine.state.output is None and engine.state.batch is None
    gc.collect()
    assert all(r() is None for r in alive)


def assert_dead(ref: weakref.ref) -> None:
    assert ref() is None, "an earlier iteration's output is still alive"


def test_without_release_the_last_output_stays_alive():
    # the behaviour the handler exists for: ignite keeps the last output after the run
    engine = Engine(lambda e, b: {"pred": torch.zeros(2)})
    engine.run([1], max_epochs=1)
    assert engine.state.output is not None


@pytest.mark.parametrize("trim", [True, False])
def test_release_trims_the_heap_once_per_iteration_when_asked(monkeypatch, trim: bool):
    calls: list[int] = []
    monkeypatch.setattr("brats_cggm.engine.validation.trim_heap", lambda: calls.append(1))
    engine = Engine(lambda e, b: {"pred": torch.zeros(2)})
    ReleaseIterationData(trim=trim).attach(engine)
    engine.run([1, 2, 3], max_epochs=1)
    assert len(calls) == (3 if trim else 0)
