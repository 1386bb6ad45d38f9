"""Atomic checkpoint writes, the previous checkpoint kept and used when the newest is damaged, RNG states."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from monai.data import Dataset
from monai.transforms import Compose, RandFlipd, RandGaussianNoised

from brats_cggm.balancing.cggm import CGGMBalancer
from brats_cggm.core.files import atomic_write_text, remove_stale_temporaries, temporary_files
from brats_cggm.engine.checkpoint import (
    BestModelSaver,
    CheckpointLoadError,
    TrainingCheckpointSaver,
    atomic_torch_save,
    capture_rng_state,
    load_checkpoint,
    previous_checkpoint_path,
    restore_rng_state,
)
from tests.helpers.crafted_files import code_running_checkpoint
from tests.helpers.tiny_setup import MODALITIES, make_batches, make_trainer


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_atomic_save_keeps_the_replaced_file_and_leaves_no_temporary_files(tmp_path: Path):
    path = tmp_path / "models" / "checkpoint.pt"
    atomic_torch_save({"trainer": 1}, path, keep_previous=True)
    assert not previous_checkpoint_path(path).exists()
    atomic_torch_save({"trainer": 2}, path, keep_previous=True)
    assert previous_checkpoint_path(path) == tmp_path / "models" / "checkpoint.prev.pt"
    assert torch.load(path)["trainer"] == 2
    assert torch.load(previous_checkpoint_path(path))["trainer"] == 1
    assert {p.name for p in path.parent.iterdir()} == {"checkpoint.pt", "checkpoint.prev.pt"}


def test_a_failed_save_keeps_the_existing_checkpoint(tmp_path: Path):
    path = tmp_path / "checkpoint.pt"
    atomic_torch_save({"trainer": 1}, path, keep_previous=True)
    with pytest.raises(Exception):  # noqa: B017 (whatever pickle raises for a lambda)
        atomic_torch_save({"trainer": lambda: 0}, path, keep_previous=True)
    assert torch.load(path)["trainer"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_truncated_checkpoint_is_detected_and_the_previous_one_used_with_a_warning(tmp_path: Path):
    path = tmp_path / "checkpoint.pt"
    atomic_torch_save({"trainer": 1}, path, keep_previous=True)
    atomic_torch_save({"trainer": 2}, path, keep_previous=True)
    assert load_checkpoint(path)[0]["trainer"] == 2
    _truncate(path)
    with pytest.warns(UserWarning, match="using the previous one"):
        checkpoint, used = load_checkpoint(path, required_keys=("trainer",))
    assert (checkpoint["trainer"], used) == (1, previous_checkpoint_path(path))
    with pytest.raises(CheckpointLoadError, match=r"checkpoint\.pt"):
        load_checkpoint(path, fallback=False)


def test_no_usable_checkpoint_is_an_error_naming_the_files(tmp_path: Path):
    path = tmp_path / "checkpoint.pt"
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_checkpoint(path)
    atomic_torch_save({"weights": 1}, path)  # loads, but is not a training checkpoint
    with pytest.raises(CheckpointLoadError, match="not a training checkpoint"):
        load_checkpoint(path, required_keys=("trainer",))
    previous_checkpoint_path(path).write_bytes(b"not a zip")
    with pytest.raises(CheckpointLoadError, match=r"checkpoint\.prev\.pt"):
        load_checkpoint(path, required_keys=("trainer",))


def _draw(dataset: Dataset) -> list:
    sample = dataset[0]
    return [random.random(), float(np.random.rand()), float(torch.rand(())), sample["image"].sum().item()]  # noqa: NPY002


def test_rng_states_round_trip_including_the_random_transforms():
    transform = Compose([RandGaussianNoised(keys="image", prob=1.0), RandFlipd(keys="image", prob=0.5)])
    dataset = Dataset([{"image": torch.zeros(1, 4, 4, 4)}], transform=transform)
    _draw(dataset)
    state = capture_rng_state(dataset)
    assert len(state["transforms"]) == 4  # Compose, both transforms and RandGaussianNoised's inner one
    expected = _draw(dataset)
    assert _draw(dataset) != expected  # the generators moved on
    restore_rng_state(state, dataset)
    assert _draw(dataset) == expected


def test_saver_writes_at_epoch_ends_after_the_balancer_with_everything_needed(tmp_path: Path):
    balancer = CGGMBalancer(MODALITIES)
    trainer = make_trainer(balancer, make_batches(2), max_epochs=2)

    def epoch_completed(epoch: int) -> None:  # an epoch-end state change, made before the checkpoint
        balancer.steps += 100

    balancer.epoch_completed = epoch_completed  # the trainer registered its call when it was built
    saved = {"network": trainer.network, "optimizer": trainer.optimizer, "balancer": balancer}
    path = tmp_path / "checkpoint.pt"
    TrainingCheckpointSaver(path, saved).attach(trainer)
    trainer.run()
    checkpoint, _ = load_checkpoint(path)
    assert set(checkpoint) == {"network", "optimizer", "balancer", "trainer", "rng"}
    assert checkpoint["trainer"]["iteration"] == 4
    assert checkpoint["balancer"]["steps"] == 4 + 200
    assert len(checkpoint["rng"]) == 1  # one entry per rank
    previous, _ = load_checkpoint(previous_checkpoint_path(path), fallback=False)
    assert (previous["trainer"]["iteration"], previous["balancer"]["steps"]) == (2, 2 + 100)


def test_rng_states_are_tensors_and_plain_types_and_round_trip_through_a_weights_only_load(tmp_path: Path):
    transform = Compose([RandGaussianNoised(keys="image", prob=1.0)])
    dataset = Dataset([{"image": torch.zeros(1, 4, 4, 4)}], transform=transform)
    atomic_torch_save({"rng": capture_rng_state(dataset)}, tmp_path / "rng.pt")
    expected = _draw(dataset)
    restore_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True)["rng"], dataset)
    assert _draw(dataset) == expected


def test_a_checkpoint_holding_code_is_refused_without_running_it(tmp_path: Path):
    crafted, marker = tmp_path / "crafted.pt", tmp_path / "code_ran"
    code_running_checkpoint(crafted, marker)
    with pytest.raises(CheckpointLoadError, match=rf"{crafted}: refused, it holds more than tensors"):
        load_checkpoint(crafted, required_keys=("trainer",))
    assert not marker.exists()


def _poison_batch_at(trainer, iteration: int) -> None:
    def poison(engine) -> None:
        engine.state.batch["image"].view(-1)[0] = float("nan")

    trainer.add_event_handler(Events.ITERATION_STARTED(once=iteration), poison)


def test_a_nan_loss_stops_training_before_the_step_and_the_last_checkpoint_stays(tmp_path: Path):
    batches = make_batches(2)
    trainer = make_trainer(CGGMBalancer(MODALITIES), batches, max_epochs=3)
    path = tmp_path / "checkpoint.pt"
    TrainingCheckpointSaver(path, {"network": trainer.network, "optimizer": trainer.optimizer}).attach(trainer)
    _poison_batch_at(trainer, 3)
    with pytest.raises(FloatingPointError, match=r"non-finite training loss at epoch 2, iteration 3"):
        trainer.run()
    checkpoint, _ = load_checkpoint(path)
    assert checkpoint["trainer"]["iteration"] == 2
    assert all(torch.isfinite(p).all() for p in trainer.network.parameters())  # no step was taken


def test_checkpoint_saver_refuses_non_finite_weights(tmp_path: Path):
    trainer = make_trainer(CGGMBalancer(MODALITIES), make_batches(2), max_epochs=2)
    path = tmp_path / "checkpoint.pt"
    TrainingCheckpointSaver(path, {"network": trainer.network, "optimizer": trainer.optimizer}).attach(trainer)
    weight = next(trainer.network.parameters())
    trainer.add_event_handler(Events.EPOCH_COMPLETED(once=2), lambda e: weight.data.fill_(float("inf")))
    with pytest.raises(FloatingPointError, match=r"non-finite values in network\..* at epoch 2, iteration 4"):
        trainer.run()
    assert load_checkpoint(path)[0]["trainer"]["iteration"] == 2
    assert not previous_checkpoint_path(path).exists()


def test_best_model_saver_refuses_non_finite_weights(tmp_path: Path):
    network = torch.nn.Linear(2, 1)
    saver = BestModelSaver(tmp_path / "model.pt", network, metric_name="dice")
    evaluator = Engine(lambda engine, batch: None)
    evaluator.state.epoch, evaluator.state.metrics = 1, {"dice": 0.5}
    saver(evaluator)
    before = (tmp_path / "model.pt").read_bytes()
    network.weight.data[0, 0] = float("nan")
    evaluator.state.epoch, evaluator.state.metrics = 2, {"dice": 0.7}
    with pytest.raises(FloatingPointError, match=r"network\.weight after epoch 2"):
        saver(evaluator)
    assert (tmp_path / "model.pt").read_bytes() == before and saver.best == 0.5


def test_written_files_get_the_umask_mode_and_stale_temporaries_are_removed(tmp_path: Path):
    previous = os.umask(0o027)
    try:
        text = atomic_write_text(tmp_path / "metrics.json", "{}")
        weights = atomic_torch_save({"w": torch.zeros(1)}, tmp_path / "model.pt")
    finally:
        os.umask(previous)
    assert oct(text.stat().st_mode & 0o777) == oct(weights.stat().st_mode & 0o777) == oct(0o640)
    stale = tmp_path / ".model.pt.0123456789ab.tmp"
    stale.touch()
    (tmp_path / ".other.pt.0123456789ab.tmp").touch()  # not the temporary of model.pt
    assert temporary_files(tmp_path / "model.pt") == [stale]
    assert remove_stale_temporaries(tmp_path / "model.pt") == [stale] and not stale.exists()
    assert (tmp_path / ".other.pt.0123456789ab.tmp").exists()


def test_a_checkpoint_with_numpy_rng_states_from_before_still_resumes(tmp_path: Path):
    np.random.seed(3)  # noqa: NPY002
    legacy = {"trainer": {"iteration": 2}, "rng": [{**capture_rng_state(), "numpy": np.random.get_state()}]}  # noqa: NPY002
    torch.save(legacy, tmp_path / "checkpoint.pt")
    expected = float(np.random.rand())  # noqa: NPY002
    checkpoint, _ = load_checkpoint(tmp_path / "checkpoint.pt", required_keys=("trainer",))
    restore_rng_state(checkpoint["rng"][0])
    assert float(np.random.rand()) == expected  # noqa: NPY002
