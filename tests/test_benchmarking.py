"""Smoke tests of the benchmark: tiny sizes, structure of the report; never timing values."""

from __future__ import annotations

import dataclasses
import json

import nibabel as nib
import pytest
import torch

from brats_cggm import benchmarking
from brats_cggm.balancing.base import Balancer
from brats_cggm.balancing.registry import _REGISTRY

HEADLINES = ("cggm_time_ratio", "cggm_mem_ratio", "infer_ratio", "load_ratio")


@pytest.fixture(autouse=True)
def _one_thread():
    # toy convolutions gain nothing from threads, and on a busy CI machine spinning threads cost a lot
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _tiny(**changes) -> benchmarking.BenchmarkConfig:
    config = benchmarking.benchmark_config("cpu", "cpu", tiny=True)
    config.warmup = 0
    config.infer_shape = (32, 32, 24)
    config.data_shape = (24, 24, 24)
    return dataclasses.replace(config, **changes)


def test_headline_keys_name_what_the_issue_asks():
    assert all(w in "cggm_time_ratio" for w in ("cggm", "time", "ratio"))
    assert all(w in "cggm_mem_ratio" for w in ("cggm", "mem", "ratio"))
    assert "infer" in "infer_ratio" and "load" in "load_ratio"
    assert set(HEADLINES) == set(benchmarking.TARGETS)


def test_balancers_scaling_variants_report(tmp_path):
    config = _tiny()
    report = benchmarking.run_benchmarks(config, ["balancers", "scaling", "variants"], tmp_path, log=lambda m: None)
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
    assert [p["patch"] for p in report["scaling"]["patch"]] == [[16, 16, 16]]
    assert [m["modalities"] for m in report["scaling"]["modalities"]] == [2]
    assert report["variants"][0]["variant"] == "default" and report["variants"][0]["speedup"] == pytest.approx(1.0)
    for key in ("date", "device", "device_name", "torch"):
        assert report["meta"][key]
    assert "tiny" in report["skipped"][0]
    assert "infer_ratio" in report and report["infer_ratio"] is None  # section not run


def test_inference_and_data_pipeline_report(tmp_path):
    config = _tiny()
    report = benchmarking.run_benchmarks(config, ["inference", "data"], tmp_path, log=lambda m: None)
    inf = report["inference"]
    assert inf["seconds_per_case"] > 0 and inf["network_only_s"] > 0
    assert report["infer_ratio"] == pytest.approx(inf["seconds_per_case"] / inf["network_only_s"])
    assert inf["peak_rss_bytes"] > 0
    assert set(inf["stages_s"]) == {"check", "preprocess", "predict", "postprocess", "write"}
    # the end-to-end run really wrote a segmentation in the input's grid
    (run_dir,) = tmp_path.glob("run_*")
    assert report["work_dir"] == str(run_dir)
    seg = nib.load(str(run_dir / "inference_out" / "bench_0.nii.gz"))
    assert seg.shape == (32, 32, 24)
    data = report["data"]
    assert data["dataset"] == "CacheDataset"
    assert data["batch_shape"] == [1, 4, 16, 16, 16] and data["case_shape"] == [24, 24, 24]
    assert data["load_ratio"] == pytest.approx(data["loader_step_s"] / data["preloaded_step_s"])
    assert len(data["loader_step_times_s"]) == len(data["preloaded_step_times_s"]) > 0


class _Broken(Balancer):
    def __init__(self, modalities=()):
        raise RuntimeError("needs a GPU cluster")


class _Explodes(Balancer):
    def extra_loss(self, ctx):
        raise FloatingPointError("diverged")


def test_balancer_that_cannot_be_built_or_run_is_reported(monkeypatch):
    monkeypatch.setitem(_REGISTRY, "broken", _Broken)
    monkeypatch.setitem(_REGISTRY, "explodes", _Explodes)
    config = _tiny(balancers=["broken", "explodes", "joint"])
    result = benchmarking.balancer_benchmark(config, log=lambda m: None)
    assert list(result["per_balancer"]) == ["joint", "broken", "explodes"]
    assert "needs a GPU cluster" in result["per_balancer"]["broken"]["error"]
    assert "diverged" in result["per_balancer"]["explodes"]["error"]
    assert result["per_balancer"]["joint"]["step_time_s"] > 0
    assert result["cggm_time_ratio"] is None


def test_balancers_are_made_active_from_the_first_epoch():
    assert benchmarking._balancer_kwargs("opm", ["a", "b"]) == {"modalities": ("a", "b"), "warmup_epochs": 0}
    assert benchmarking._balancer_kwargs("joint", ["a", "b"]) == {"modalities": ("a", "b")}


def test_memory_worker_in_process():
    spec = _tiny().base
    result = benchmarking._memory_worker(spec, steps=1)
    assert result["peak_rss_bytes"] > 0 and result["baseline_rss_bytes"] > 0
    if "step_peak_bytes" in result:  # where the kernel lets the peak be reset
        assert 0 <= result["step_peak_bytes"] <= result["peak_rss_bytes"]


@pytest.mark.slow
def test_memory_in_subprocess():
    result = benchmarking.measure_step_memory(_tiny().base, steps=1)
    assert result["peak_rss_bytes"] > result["baseline_rss_bytes"] > 0


def test_speed_options_keep_the_step_correct():
    spec = dataclasses.replace(_tiny().base, channels_last=True)
    trainer = benchmarking.build_trainer(spec, [benchmarking.synthetic_batch(spec)])
    conv = trainer.network.encoders[0].levels[0].conv1.conv
    assert conv.weight.is_contiguous(memory_format=torch.channels_last_3d)
    trainer.run()
    assert torch.isfinite(trainer.state.output["loss"])
    with pytest.raises(ValueError, match="unknown variant"):
        benchmarking._variant_spec(spec, "bf16+turbo")


def test_cli_refuses_existing_output_and_bad_arguments(tmp_path, capsys):
    out = tmp_path / "b.json"
    out.write_text("keep")
    assert benchmarking.main(["--out", str(out), "--tiny"]) == 2
    assert out.read_text() == "keep"
    assert "exists" in capsys.readouterr().err
    assert benchmarking.main(["--out", str(tmp_path / "c.json"), "--sections", "balancers,warp"]) == 2
    assert benchmarking.main(["--out", str(tmp_path / "c.txt")]) == 2
    if not torch.cuda.is_available():
        assert benchmarking.main(["--out", str(tmp_path / "c.json"), "--device", "cuda"]) == 2
    assert not (tmp_path / "c.json").exists()


def test_cli_tiny_run_writes_json(tmp_path, capsys):
    out = tmp_path / "sub" / "b.json"
    code = benchmarking.main(
        ["--tiny", "--out", str(out), "--sections", "balancers", "--balancers", "joint,cggm", "--no-memory"]
    )
    assert code == 0
    report = json.loads(out.read_text())
    assert report["meta"]["quick"] is False and set(report["balancers"]["per_balancer"]) == {"joint", "cggm"}
    assert "cggm_time_ratio" in capsys.readouterr().out
    assert [p.name for p in out.parent.iterdir()] == ["b.json"]  # no temporary or partial file left


def test_cli_keeps_finished_sections_when_a_later_one_fails(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(benchmarking, "scaling_benchmark", fail)
    out = tmp_path / "b.json"
    argv = ["--tiny", "--out", str(out), "--sections", "balancers,scaling", "--balancers", "joint", "--no-memory"]
    assert benchmarking.main(argv) == 1
    assert not out.exists()
    partial = json.loads((tmp_path / "b.partial.json").read_text())
    assert "joint" in partial["balancers"]["per_balancer"] and "scaling" not in partial
