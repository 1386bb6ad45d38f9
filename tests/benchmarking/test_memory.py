"""Peak memory: in process and through the worker subprocess."""

from __future__ import annotations

import pytest

from brats_cggm.benchmarking.memory import measure_step_memory, memory_worker
from tests.helpers.bench_tiny import one_thread, tiny_config  # noqa: F401


def test_memory_worker_in_process():
    spec = tiny_config().base
    result = memory_worker(spec, steps=1)
    assert result["peak_rss_bytes"] > 0 and result["baseline_rss_bytes"] > 0
    if "step_peak_bytes" in result:  # where the kernel lets the peak be reset
        assert 0 <= result["step_peak_bytes"] <= result["peak_rss_bytes"]


@pytest.mark.slow
def test_memory_in_subprocess():
    result = measure_step_memory(tiny_config().base, steps=1)
    assert result["peak_rss_bytes"] > result["baseline_rss_bytes"] > 0
