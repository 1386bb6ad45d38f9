"""The dataset_scale section: memory of bundle runs against the number of cases, loader speed, build time (tiny)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from brats_cggm.benchmarking.process_tree import TreePeakSampler, tree_memory, tree_pids
from brats_cggm.benchmarking.runner import SECTIONS, run_benchmarks
from brats_cggm.benchmarking.sections.dataset_scale import (
    BRATS2021_CASES,
    linear_fit,
    memory_lines,
    replicate_case,
    subset_dataset,
)
from brats_cggm.brats.data.discovery import discover_dataset
from brats_cggm.brats.phantoms.geometric import write_phantom_dataset
from tests.helpers.bench_tiny import one_thread, tiny_config  # noqa: F401  (autouse fixture)

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def test_linear_fit_by_hand():
    # y = 3 + 2x exactly, then a point above and one below the line of the same size
    assert linear_fit([1, 2, 3], [5, 7, 9]) == pytest.approx((2.0, 3.0))
    # (0,0), (2,4), (4,4): mean x 2, mean y 8/3; slope = (0*.. + 0 + 2*(4-8/3)) / (4 + 0 + 4) ... by hand: 1.0
    slope, intercept = linear_fit([0, 2, 4], [0, 4, 4])
    assert slope == pytest.approx(1.0) and intercept == pytest.approx(8 / 3 - 2)
    with pytest.raises(ValueError, match="two distinct"):
        linear_fit([3, 3], [1, 2])


def test_memory_lines_by_hand():
    # anon grows 2 MB per case from 100 MB; file stays at 50 MB; total is their sum
    points = [
        {
            "cases": n,
            "peak_anon_bytes": (100 + 2 * n) * 1e6,
            "peak_file_bytes": 50e6,
            "peak_total_bytes": (150 + 2 * n) * 1e6,
        }
        for n in (3, 6, 9)
    ]
    lines = memory_lines(points)
    assert lines["anon"]["mb_per_case"] == pytest.approx(2.0) and lines["anon"]["intercept_mb"] == pytest.approx(100)
    assert lines["file"]["mb_per_case"] == pytest.approx(0.0, abs=1e-9)
    assert lines["total"]["extrapolated_peak_gb"] == pytest.approx((150 + 2 * BRATS2021_CASES) / 1e3)


def test_replicate_case_copies_one_case_under_new_ids(tmp_path):
    write_phantom_dataset(tmp_path / "one", n=1, shape=(24, 24, 24), seed=0)
    source = tmp_path / "one" / "BraTS2021_00000"
    out = replicate_case(source, tmp_path / "three", 3)
    spec = discover_dataset(out)
    assert [item["case_id"] for item in spec.items] == ["BraTS2021_00000", "BraTS2021_00001", "BraTS2021_00002"]
    copy = out / "BraTS2021_00002" / "BraTS2021_00002_t1ce.nii.gz"
    assert copy.read_bytes() == (source / "BraTS2021_00000_t1ce.nii.gz").read_bytes() and not copy.is_symlink()


def test_subset_dataset_links_the_first_cases(tmp_path):
    source = tmp_path / "source"
    for name in ("case_b", "case_a", "case_c", ".hidden"):
        (source / name).mkdir(parents=True)
        (source / name / "x.nii.gz").write_bytes(b"")
    subset = subset_dataset(source, tmp_path / "two", 2)
    assert sorted(p.name for p in subset.iterdir()) == ["case_a", "case_b"]
    assert all(p.is_symlink() and (p / "x.nii.gz").is_file() for p in subset.iterdir())
    with pytest.raises(ValueError, match="3 case folders, 4 asked"):
        subset_dataset(source, tmp_path / "four", 4)


_CHILD = """
import sys, time
import numpy as np
a = np.ones(int(sys.argv[1]) * 2**20, dtype=np.uint8)  # touched: resident, anonymous
print("ready", flush=True)
time.sleep(30)
"""


@linux_only
def test_the_sampler_counts_a_grandchild_s_anonymous_memory():
    # a parent that starts a child allocating 200 MiB: the sampler of the parent's tree must see it
    parent = subprocess.Popen(
        [sys.executable, "-c", f"import subprocess, sys; subprocess.run([sys.executable, '-c', {_CHILD!r}, '200'])"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        with TreePeakSampler(parent.pid, interval=0.02) as sampler:
            assert parent.stdout.readline().strip() == "ready"
            time.sleep(0.2)
            pids = tree_pids(parent.pid)
            now = tree_memory(parent.pid)
    finally:
        for pid in reversed(tree_pids(parent.pid)):
            subprocess.run(["kill", str(pid)], check=False)
        parent.wait()
    assert len(pids) == 2 and pids[0] == parent.pid
    assert now["processes"] == 2 and now["anon"] >= 200 * 2**20
    assert sampler.peaks["anon"] >= 200 * 2**20 and sampler.peaks["file"] > 0
    assert sampler.peaks["total"] >= sampler.peaks["anon"] and sampler.samples >= 2


def test_scale_is_a_registered_section():
    assert "dataset_scale" in SECTIONS


@pytest.mark.slow
@linux_only
def test_scale_section_reports_memory_lines_loader_and_build(tmp_path):
    config = tiny_config(memory=True)
    report = run_benchmarks(config, ["dataset_scale"], tmp_path, log=lambda m: None)
    scale = report["dataset_scale"]
    assert scale["cases"] == [2, 3] and scale["case_shape"] == [40, 40, 32]
    assert scale["disk_entry_mb"] > 0
    runs = scale["runs"]
    points = runs["points"]
    # the bundle's split (val_fraction 0.2, at least one case): 1 + 1, then 2 + 1
    assert [(p["cases"], p["train_cases"], p["val_cases"]) for p in points] == [(2, 1, 1), (3, 2, 1)]
    for p in points:
        assert 0 < p["peak_anon_bytes"] <= p["peak_total_bytes"] and p["peak_file_bytes"] > 0
        assert p["max_processes"] >= 1 and p["samples"] >= 1 and p["wall_s"] > 0
        # the one validation case's cropped volume, at most the phantom's
        assert 0 < p["largest_val_voxels"] <= 40 * 40 * 32
    for kind in ("anon", "file", "total"):
        peaks = [p[f"peak_{kind}_bytes"] for p in points]
        # two points: the line goes through both
        assert runs[kind]["mb_per_case"] == pytest.approx((peaks[1] - peaks[0]) / 1e6)
        expected = (peaks[0] + (BRATS2021_CASES - 2) * (peaks[1] - peaks[0])) / 1e9
        assert runs[kind]["extrapolated_peak_gb"] == pytest.approx(expected)
    # the runs' caches and outputs are removed once measured
    (work,) = tmp_path.glob("run_*")
    assert (work / "scale_data").is_dir() and not (work / "runs").exists()
    (point,) = scale["loader"]
    assert point["patch"] == [16, 16, 16]
    assert point["load_ratio"] == pytest.approx(point["loader_step_s"] / point["preloaded_step_s"])
    build = scale["build"]
    assert build["cases"] == 2 and build["one_worker_s_per_case"] > 0 and build["all_workers_processes"] == 1
    from brats_cggm.benchmarking.report import format_report

    assert "MB per added case" in format_report(report)
