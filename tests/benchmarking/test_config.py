"""The benchmark's configuration and targets."""

from __future__ import annotations

from brats_cggm.benchmarking import StepSpec, benchmark_config
from brats_cggm.benchmarking.config import TARGETS
from tests.helpers.bench_tiny import HEADLINES


def test_headline_keys_name_what_they_measure():
    assert all(w in "cggm_time_ratio" for w in ("cggm", "time", "ratio"))
    assert all(w in "cggm_mem_ratio" for w in ("cggm", "mem", "ratio"))
    assert "infer" in "infer_ratio" and "load" in "load_ratio"
    assert set(HEADLINES) == set(TARGETS)


def test_step_spec_round_trips_through_json():
    spec = StepSpec(patch=(16, 16, 8), modalities=("flair", "t1"), features=(4, 8), amp="bf16")
    assert StepSpec.from_json(spec.to_json()) == spec


def test_library_config_names_no_bundle():
    # the command line finds the bundle; library code never guesses a repository layout
    assert benchmark_config("cpu", "cpu", quick=True).bundle_config is None
