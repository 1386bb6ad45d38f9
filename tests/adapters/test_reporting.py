"""metrics.json with test metrics: best weights for the test run, final weights afterwards."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from ignite.engine import Engine
from torch import nn

from brats_cggm.adapters.reporting import MetricsWithTestJSONWriter


class _RecordingEvaluator:
    """A stand-in test evaluator: remembers the weights it saw and reports fixed metrics."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.seen: torch.Tensor | None = None
        self.state = type("State", (), {"metrics": {}})()

    def run(self, global_epoch: int) -> None:
        self.seen = self.module.weight.detach().clone()
        self.state.metrics = {"test/accuracy": torch.tensor(0.25), "test/per_class": torch.ones(3)}


def _train(writer: MetricsWithTestJSONWriter, module: nn.Module) -> Engine:
    def step(engine, batch):
        with torch.no_grad():
            module.weight.add_(1.0)  # "training" changes the weights
        return {}

    engine = Engine(step)
    writer.attach(engine)
    engine.run([0, 1], max_epochs=1)
    return engine


def test_test_run_uses_best_weights_then_restores_the_final_ones(tmp_path):
    module = nn.Linear(2, 2, bias=False)
    best = tmp_path / "model.pt"
    torch.save({"weight": torch.full((2, 2), 7.0)}, best)
    validation = type("Evaluator", (), {"state": type("S", (), {"metrics": {"val/accuracy": 0.5}})()})()
    test = _RecordingEvaluator(module)
    counter = iter(range(100))
    writer = MetricsWithTestJSONWriter(
        tmp_path, validation, test, best_weights=[(str(best), module)], extra={"calls": lambda: next(counter)}
    )
    module.weight.data.zero_()
    _train(writer, module)  # two steps: the final weights are all 2

    assert torch.equal(test.seen, torch.full((2, 2), 7.0))
    assert torch.equal(module.weight, torch.full((2, 2), 2.0))
    report = json.loads((tmp_path / "metrics.json").read_text())
    assert report["test"] == {"test/accuracy": 0.25} and report["test_checkpoint"] == "best"
    assert report["validation"] == {"val/accuracy": 0.5} and report["calls"] == 0


def test_without_best_weights_the_final_ones_are_tested_with_a_warning(tmp_path):
    module = nn.Linear(2, 2, bias=False)
    validation = type("Evaluator", (), {"state": type("S", (), {"metrics": {}})()})()
    test = _RecordingEvaluator(module)
    writer = MetricsWithTestJSONWriter(tmp_path, validation, test, best_weights=[(str(tmp_path / "no.pt"), module)])
    with pytest.warns(UserWarning, match=r"no\.pt"):
        _train(writer, module)
    assert torch.equal(test.seen, module.weight)
    assert json.loads((tmp_path / "metrics.json").read_text())["test_checkpoint"] == "last"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        last = MetricsWithTestJSONWriter(tmp_path / "last", validation, test, test_checkpoint="last")
        _train(last, module)
    with pytest.raises(ValueError, match="test_checkpoint"):
        MetricsWithTestJSONWriter(tmp_path, validation, test, test_checkpoint="worst")
