"""The balancer section: a balancer that cannot be built or run is reported, not fatal."""

from __future__ import annotations

from brats_cggm.balancing.registry import _REGISTRY
from brats_cggm.benchmarking.sections.balancers import balancer_benchmark
from brats_cggm.core.balancer import Balancer
from tests.helpers.bench_tiny import one_thread, tiny_config  # noqa: F401


class _Broken(Balancer):
    def __init__(self, modalities=()):
        raise RuntimeError("needs a GPU cluster")


class _Explodes(Balancer):
    def extra_loss(self, ctx):
        raise FloatingPointError("diverged")


def test_balancer_that_cannot_be_built_or_run_is_reported(monkeypatch):
    monkeypatch.setitem(_REGISTRY, "broken", _Broken)
    monkeypatch.setitem(_REGISTRY, "explodes", _Explodes)
    config = tiny_config(balancers=["broken", "explodes", "joint"])
    result = balancer_benchmark(config, log=lambda m: None)
    assert list(result["per_balancer"]) == ["joint", "broken", "explodes"]
    assert "needs a GPU cluster" in result["per_balancer"]["broken"]["error"]
    assert "diverged" in result["per_balancer"]["explodes"]["error"]
    assert result["per_balancer"]["joint"]["step_time_s"] > 0
    assert result["cggm_time_ratio"] is None
