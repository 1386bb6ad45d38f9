"""The measured training step: balancers are built to act within the benchmark's single epoch; its optimisers."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
import torch
import yaml

from brats_cggm.balancing import available_balancers, balancer_class
from brats_cggm.benchmarking.config import StepSpec
from brats_cggm.benchmarking.steps import BENCHMARK_EPOCHS, balancer_kwargs, build_optimizers
from tests.helpers.bundle_runs import REPO

TRAIN_YAML = "bundles/brats_cggm/configs/train.yaml"

#: The constructor arguments the benchmark passed before ``Balancer.short_run_kwargs`` existed.
PREVIOUS_ACTIVE_KWARGS: dict[str, dict[str, Any]] = {
    "cggm": {"start_epoch": 0},
    "inforeg": {"start_epoch": 0},
    "ogm_ge": {"start_epoch": 1},
    "opm": {"warmup_epochs": 0},
}


def test_balancers_are_made_active_from_the_first_epoch():
    assert balancer_kwargs("opm", ["a", "b"]) == {"modalities": ("a", "b"), "warmup_epochs": 0}
    assert balancer_kwargs("joint", ["a", "b"]) == {"modalities": ("a", "b")}


@pytest.mark.parametrize("name", available_balancers())
def test_short_run_kwargs_construct_every_balancer_as_before(name):
    cls = balancer_class(name)
    signature = inspect.signature(cls)
    accepted = signature.parameters
    previous = {
        "modalities": ("a", "b"),
        **{k: v for k, v in PREVIOUS_ACTIVE_KWARGS.get(name, {}).items() if k in accepted},
    }
    before = signature.bind(**previous)
    now = signature.bind(**balancer_kwargs(name, ("a", "b")))
    before.apply_defaults()
    now.apply_defaults()
    assert BENCHMARK_EPOCHS == 1
    assert now.arguments == before.arguments


def test_unknown_balancer_is_named():
    with pytest.raises(ValueError, match="unknown balancer 'warp'"):
        balancer_kwargs("warp", ["a", "b"])


@pytest.mark.parametrize(
    ("name", "config_files"),
    [("adamw", [TRAIN_YAML]), ("sgd", [TRAIN_YAML, "configs/optimizers/sgd_paper.yaml"])],
)
def test_optimizers_are_those_the_bundle_configures(name, config_files):
    settings = {}
    for config in config_files:
        settings.update(yaml.safe_load((REPO / config).read_text()))
    network, heads = torch.nn.Linear(2, 2), torch.nn.Linear(2, 1)
    optimizer, aux_optimizer = build_optimizers(StepSpec(optimizer=name), network, heads)
    target = settings["optimizer"]["_target_"]
    assert f"torch.optim.{type(optimizer).__name__}" == target == f"torch.optim.{type(aux_optimizer).__name__}"
    group, aux_group = optimizer.param_groups[0], aux_optimizer.param_groups[0]
    assert group["lr"] == settings["learning_rate"] and aux_group["lr"] == settings["aux_learning_rate"]
    assert group["weight_decay"] == settings["weight_decay"]
    assert group.get("momentum") == settings.get("momentum") == aux_group.get("momentum")
    assert aux_group["params"] == list(heads.parameters())


def test_unknown_optimizer_is_named():
    with pytest.raises(ValueError, match="unknown optimizer 'lion'"):
        build_optimizers(StepSpec(optimizer="lion"), torch.nn.Linear(1, 1), torch.nn.Linear(1, 1))
