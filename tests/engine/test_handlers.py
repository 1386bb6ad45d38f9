"""The ignite handlers: TrainingScalarsHandler's TensorBoard tags, MetricsJSONWriter's file, is_scalar/to_float."""

from __future__ import annotations

import json

import pytest
import torch
from ignite.engine import Engine, Events

import brats_cggm.engine.handlers as handlers
from brats_cggm.core.events import read_scalars
from brats_cggm.core.files import temporary_files
from brats_cggm.engine.handlers import MetricsJSONWriter, TrainingScalarsHandler, is_scalar, to_float

MODALITIES = ("flair", "t1ce")


def _step_output(engine: Engine, batch) -> dict:
    """What a BalancedTrainer leaves in ``engine.state.output``, with values made from the iteration."""
    i = float(engine.state.iteration)
    return {
        "loss": torch.tensor(i),
        "task_loss": torch.tensor(i / 2),
        "aux_loss": torch.tensor(i / 4),
        "utilization": torch.tensor([0.1 * i, 0.2 * i]),
        "grad_norm": torch.tensor([10.0 * i, 20.0 * i]),
        "balancer": {"cggm/coefficient/flair": torch.tensor(i + 1), "cggm/lambda": 0.5},
    }


def _trainer() -> Engine:
    engine = Engine(_step_output)
    engine.optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.125)
    return engine


def test_scalars_handler_writes_every_tag_at_every_interval(tmp_path):
    engine = _trainer()
    handler = TrainingScalarsHandler(MODALITIES, log_dir=tmp_path, interval=2, utilization_tag="train/eps")
    handler.attach(engine)
    engine.run(range(5), max_epochs=1)
    handler.writer.close()
    values = read_scalars(tmp_path)
    assert set(values) == {
        "train/loss",
        "train/task_loss",
        "train/aux_loss",
        "train/lr",
        "train/eps/flair",
        "train/eps/t1ce",
        "grad_norm/flair",
        "grad_norm/t1ce",
        "cggm/coefficient/flair",
        "cggm/lambda",
    }
    assert all([step for step, _ in points] == [2, 4] for points in values.values())
    expected_at_4 = {
        "train/loss": 4.0,
        "train/task_loss": 2.0,
        "train/aux_loss": 1.0,
        "train/lr": 0.125,
        "train/eps/flair": 0.4,
        "train/eps/t1ce": 0.8,
        "grad_norm/flair": 40.0,
        "grad_norm/t1ce": 80.0,
        "cggm/coefficient/flair": 5.0,
        "cggm/lambda": 0.5,
    }
    assert {tag: points[-1][1] for tag, points in values.items()} == pytest.approx(expected_at_4)


def test_scalars_handler_default_utilization_tag_and_given_writer(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    engine = _trainer()
    with SummaryWriter(log_dir=str(tmp_path / "given")) as writer:
        TrainingScalarsHandler(MODALITIES, summary_writer=writer, log_dir=tmp_path / "unused").attach(engine)
        engine.run(range(1), max_epochs=1)
    assert {"train/modality_dice/flair", "train/modality_dice/t1ce"} <= set(read_scalars(tmp_path / "given"))
    assert not (tmp_path / "unused").exists()


def test_scalars_handler_writes_nothing_off_rank_0(tmp_path, monkeypatch):
    monkeypatch.setattr(handlers, "is_main_process", lambda: False)
    engine = _trainer()
    handler = TrainingScalarsHandler(MODALITIES, log_dir=tmp_path / "runs")
    handler.attach(engine)
    engine.run(range(3), max_epochs=1)
    assert handler._writer is None and not (tmp_path / "runs").exists()


def _evaluator(metrics: dict, **state) -> Engine:
    evaluator = Engine(lambda engine, batch: None)
    evaluator.state.metrics = metrics
    for name, value in state.items():
        setattr(evaluator.state, name, value)
    return evaluator


METRICS = {
    "val/dice/mean": 0.5,
    "val/dice/TC": torch.tensor(0.25),
    "val/dice/WT": torch.tensor([0.75]),
    "val/count": 3,
    "val/per_case": torch.tensor([0.1, 0.9]),  # not one number: left out
    "val/name": "left out",
}


def test_metrics_writer_file_content(tmp_path):
    engine = _trainer()
    evaluator = _evaluator(METRICS, best_metric=0.625, best_metric_epoch=2)
    writer = MetricsJSONWriter(tmp_path, evaluator, extra={"config": "train.yaml"})
    writer.attach(engine)
    engine.run(range(3), max_epochs=2)
    report = json.loads((tmp_path / "metrics.json").read_text())
    assert set(report) == {
        "epoch", "iteration", "validation", "best_metric", "best_metric_epoch", "seconds_per_iteration", "config"
    }  # fmt: skip
    assert report["epoch"] == 2 and report["iteration"] == 6
    assert report["validation"] == {"val/dice/mean": 0.5, "val/dice/TC": 0.25, "val/dice/WT": 0.75, "val/count": 3.0}
    assert report["best_metric"] == 0.625 and report["best_metric_epoch"] == 2
    assert report["config"] == "train.yaml"
    # the mean over the iterations after the first (the warm-up)
    assert len(writer._step_times) == 6 and report["seconds_per_iteration"] == pytest.approx(
        sum(writer._step_times[1:]) / 5
    )


def test_metrics_writer_without_best_metric_or_iterations(tmp_path):
    engine = _trainer()
    MetricsJSONWriter(tmp_path, _evaluator({}), filename="final.json").attach(engine)
    engine.fire_event(Events.COMPLETED)  # training that stops before its first iteration
    report = json.loads((tmp_path / "final.json").read_text())
    assert report["validation"] == {} and report["best_metric"] is None and report["best_metric_epoch"] is None
    assert report["seconds_per_iteration"] is None


def test_metrics_writer_is_atomic_and_clears_stale_temporaries(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text('{"old": true}\n')
    stale = tmp_path / ".metrics.json.0123456789ab.tmp"
    stale.write_text("half a file")
    assert temporary_files(target) == [stale]
    engine = _trainer()
    MetricsJSONWriter(tmp_path, _evaluator(METRICS)).attach(engine)
    assert not stale.exists()  # removed when the run starts
    engine.run(range(2), max_epochs=1)
    assert temporary_files(target) == []
    assert "old" not in json.loads(target.read_text())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_metrics_writer_writes_nothing_off_rank_0(tmp_path, monkeypatch):
    monkeypatch.setattr(handlers, "is_main_process", lambda: False)
    stale = tmp_path / ".metrics.json.0123456789ab.tmp"
    stale.write_text("another rank's")
    engine = _trainer()
    MetricsJSONWriter(tmp_path, _evaluator(METRICS)).attach(engine)
    engine.run(range(2), max_epochs=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == [stale.name]


@pytest.mark.parametrize(
    "value,expected",
    [(1, True), (0.5, True), (torch.tensor(2.0), True), (torch.tensor([[3]]), True), (torch.ones(2), False),
     ("0.5", False), (None, False), ([0.5], False)],
)  # fmt: skip
def test_is_scalar(value, expected):
    assert is_scalar(value) is expected


def test_to_float():
    assert to_float(3) == 3.0 and isinstance(to_float(3), float)
    assert to_float(torch.tensor(0.5, requires_grad=True)) == 0.5
    assert to_float(torch.tensor([[2]], dtype=torch.int64)) == 2.0
    assert to_float(torch.tensor([1.0, 2.0])) == 1.5  # a tensor's mean
    assert to_float(torch.tensor(1.5, dtype=torch.float16)) == 1.5


class _ActingBalancer:
    """Stands in for a balancer whose activity grows with the iterations."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def activity(self) -> dict[str, float]:
        return {"cggm/B/flair/mean": float(self.engine.state.iteration)}


def test_activity_is_logged_at_every_epoch_end_and_written_to_metrics(tmp_path):
    from brats_cggm.engine.modality_dropout import ModalityDropout

    engine = _trainer()
    engine.balancer = _ActingBalancer(engine)
    engine.modality_dropout = ModalityDropout(MODALITIES, p=0.5)
    engine.modality_dropout.draw(4)
    handler = TrainingScalarsHandler(MODALITIES, log_dir=tmp_path / "tb", interval=100)
    handler.attach(engine)
    MetricsJSONWriter(tmp_path, _evaluator({})).attach(engine)
    engine.run(range(3), max_epochs=2)
    handler.writer.close()
    values = read_scalars(tmp_path / "tb")
    assert values["activity/cggm/B/flair/mean"] == [(3, 3.0), (6, 6.0)]  # at each epoch's last iteration
    assert values["activity/modality_dropout/samples"][-1] == (6, 4.0)
    report = json.loads((tmp_path / "metrics.json").read_text())
    dropped = engine.modality_dropout.dropped / 4
    assert report["activity"] == pytest.approx(
        {
            "cggm/B/flair/mean": 6.0,
            "modality_dropout/dropped/flair": float(dropped[0]),
            "modality_dropout/dropped/t1ce": float(dropped[1]),
            "modality_dropout/samples": 4.0,
        }
    )


def test_joint_training_writes_no_activity(tmp_path):
    engine = _trainer()
    MetricsJSONWriter(tmp_path, _evaluator({})).attach(engine)
    engine.run(range(1), max_epochs=1)
    assert "activity" not in json.loads((tmp_path / "metrics.json").read_text())
