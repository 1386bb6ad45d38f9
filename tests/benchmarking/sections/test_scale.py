"""The scale section: epoch memory against the number of cases, loader speed, cache build time (tiny sizes)."""

from __future__ import annotations

import pytest

from brats_cggm.benchmarking.runner import SECTIONS, run_benchmarks
from brats_cggm.benchmarking.sections.scale import BRATS2021_CASES, linear_fit
from tests.helpers.bench_tiny import one_thread, tiny_config  # noqa: F401  (autouse fixture)


def test_linear_fit_by_hand():
    # y = 3 + 2x exactly, then a point above and one below the line of the same size
    assert linear_fit([1, 2, 3], [5, 7, 9]) == pytest.approx((2.0, 3.0))
    # (0,0), (2,4), (4,4): mean x 2, mean y 8/3; slope = (0*.. + 0 + 2*(4-8/3)) / (4 + 0 + 4) ... by hand: 1.0
    slope, intercept = linear_fit([0, 2, 4], [0, 4, 4])
    assert slope == pytest.approx(1.0) and intercept == pytest.approx(8 / 3 - 2)
    with pytest.raises(ValueError, match="two distinct"):
        linear_fit([3, 3], [1, 2])


def test_scale_is_a_registered_section():
    assert "scale" in SECTIONS


@pytest.mark.slow
def test_scale_section_reports_memory_lines_loader_and_build(tmp_path):
    config = tiny_config(memory=True)
    report = run_benchmarks(config, ["scale"], tmp_path, log=lambda m: None)
    scale = report["scale"]
    assert scale["cases"] == [2, 3] and scale["case_shape"] == [40, 40, 32]
    assert scale["disk_entry_mb"] > 0
    for cache in ("disk", "memory"):
        line = scale["epochs"][cache]
        assert [p["cases"] for p in line["points"]] == [2, 3]
        assert all(p["peak_rss_bytes"] > 0 and p["iterations"] >= 1 for p in line["points"])
        peaks = [p["peak_rss_bytes"] for p in line["points"]]
        # two points: the line goes through both
        assert line["mb_per_case"] == pytest.approx((peaks[1] - peaks[0]) / 1e6)
        expected = (peaks[0] + (BRATS2021_CASES - 2) * (peaks[1] - peaks[0])) / 1e9
        assert line["extrapolated_peak_gb"] == pytest.approx(expected)
    (point,) = scale["loader"]
    assert point["patch"] == [16, 16, 16]
    assert point["load_ratio"] == pytest.approx(point["loader_step_s"] / point["preloaded_step_s"])
    build = scale["build"]
    assert build["cases"] == 2 and build["one_worker_s_per_case"] > 0 and build["all_workers_processes"] == 1
    from brats_cggm.benchmarking.report import format_report

    assert "cache disk:" in format_report(report)
