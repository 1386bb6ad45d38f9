"""Atomic checkpoint writes, the previous checkpoint kept and used when the newest is damaged, RNG states."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import Dataset
from monai.transforms import Compose, RandFlipd, RandGaussianNoised
from tiny_setup import MODALITIES, make_batches, make_trainer

from brats_cggm.balancing.cggm import CGGMBalancer
from brats_cggm.engine.checkpoint import (
    CheckpointLoadError,
    TrainingCheckpointSaver,
    atomic_torch_save,
    capture_rng_state,
    load_checkpoint,
    previous_checkpoint_path,
    restore_rng_state,
)


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
