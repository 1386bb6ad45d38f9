"""Whole runs of the sections at tiny sizes: the structure of the report, never timing values."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import pytest

from brats_cggm.benchmarking.report import format_report
from brats_cggm.benchmarking.runner import run_benchmarks
from tests.helpers.bench_tiny import one_thread, tiny_config  # noqa: F401


def test_balancers_scaling_variants_report(tmp_path):
    config = tiny_config()
    report = run_benchmarks(config, ["balancers", "step_scaling", "variants"], tmp_path, log=lambda m: None)
    json.dumps(report)  # serialisable as written
    per = report["balancers"]["per_balancer"]
    assert set(per) == {"joint", "cggm"}
    for entry in per.values():
        assert entry["step_time_s"] > 0 and len(entry["step_times_s"]) == config.rounds * config.block
    assert per["joint"]["time_ratio"] == pytest.approx(1.0)
    assert report["cggm_time_ratio"] == pytest.approx(per["cggm"]["step_time_s"] / per["joint"]["step_time_s"])
    assert report["cggm_mem_ratio"] is None  # memory off: no number is invented
    assert report["targets_met"]["cggm_mem_ratio"] is None
    assert isinstance(report["targets_met"]["cggm_time_ratio"], bool)
    assert [p["patch"] for p in report["step_scaling"]["patch"]] == [[16, 16, 16]]
    assert [m["modalities"] for m in report["step_scaling"]["modalities"]] == [2]
    assert report["variants"][0]["variant"] == "default" and report["variants"][0]["speedup"] == pytest.approx(1.0)
    for key in ("date", "device", "device_name", "torch"):
        assert report["meta"][key]
    assert "tiny" in report["skipped"][0]
    assert "infer_ratio" in report and report["infer_ratio"] is None  # section not run


def test_inference_and_data_pipeline_report(tmp_path):
    config = tiny_config()
    report = run_benchmarks(config, ["inference", "data"], tmp_path, log=lambda m: None)
    inf = report["inference"]
    assert inf["seconds_per_case"] > 0 and inf["network_only_s"] > 0
    assert report["infer_ratio"] == pytest.approx(inf["seconds_per_case"] / inf["network_only_s"])
    assert inf["peak_rss_bytes"] > 0
    stages = ["read", "check", "preprocess", "network", "invert", "postprocess", "write"]
    assert list(inf["stages_s"]) == stages and min(inf["stages_s"].values()) >= 0.0
    # the folder: 8 cases, one after the other and pipelined, then the candidate setting beside the default
    folder = inf["folder"]
    assert folder["cases"] == 8 and [r["workers"] for r in folder["runs"]] == [0, config.infer_workers]
    for run in folder["runs"]:
        assert list(run["stages_s"]) == stages and min(run["stages_s"].values()) >= 0.0
        assert run["cases_per_minute"] == pytest.approx(60.0 / run["seconds_per_case"])
        assert run["e2e_over_network"] == pytest.approx(run["seconds_per_case"] / run["stages_s"]["network"], rel=1e-3)
    outputs = [sorted(p.name for p in Path(r["out_dir"]).iterdir()) for r in folder["runs"]]
    assert outputs[0] == outputs[1] and len(outputs[0]) == 16  # a label map and a record per case
    default, candidate = inf["settings"]
    assert (default["roi"], default["overlap"]) == ([16, 16, 16], 0.25)
    assert (candidate["roi"], candidate["overlap"]) == ([16, 16, 16], 0.0)
    assert 0.0 <= default["mean_dice"] <= 1.0 and set(default["dice"]) == {"wt", "tc", "et"}
    assert inf["candidate_speedup"] == pytest.approx(default["seconds_per_case"] / candidate["seconds_per_case"])
    assert inf["weights"] == "random"
    text = format_report(report)
    assert "workers 0:" in text and f"workers {config.infer_workers}:" in text and "cases/min" in text
    assert "candidate window [16, 16, 16], overlap 0.0" in text and "default / candidate time: x" in text
    # the end-to-end run really wrote a segmentation in the input's grid
    (run_dir,) = tmp_path.glob("run_*")
    assert report["work_dir"] == str(run_dir)
    seg = nib.load(str(run_dir / "inference_out" / "bench_0.nii.gz"))
    assert seg.shape == (32, 32, 24)
    data = report["data"]
    assert data["dataset"] == "Dataset"  # the bundle's default cache: disk entries, read lazily
    assert data["batch_shape"] == [1, 4, 16, 16, 16] and data["case_shape"] == [24, 24, 24]
    assert data["load_ratio"] == pytest.approx(data["loader_step_s"] / data["preloaded_step_s"])
    assert len(data["loader_step_times_s"]) == len(data["preloaded_step_times_s"]) > 0


def test_data_section_without_a_bundle_config_says_so(tmp_path):
    with pytest.raises(ValueError, match="bundle_config"):
        run_benchmarks(tiny_config(bundle_config=None), ["data"], tmp_path, log=lambda m: None)


def test_unknown_section_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown section"):
        run_benchmarks(tiny_config(), ["balancers", "warp"], tmp_path, log=lambda m: None)
