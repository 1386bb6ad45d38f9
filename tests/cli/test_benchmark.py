"""``brats-cggm-benchmark``: argument checks, the JSON it writes, partial results, the bundle it finds."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from brats_cggm.benchmarking import runner
from brats_cggm.cli import benchmark as cli
from brats_cggm.cli.benchmark import default_bundle_config, main
from tests.helpers.bench_tiny import BUNDLE_CONFIG, one_thread  # noqa: F401


def test_cli_refuses_existing_output_and_bad_arguments(tmp_path, capsys):
    out = tmp_path / "b.json"
    out.write_text("keep")
    assert main(["--out", str(out), "--tiny"]) == 2
    assert out.read_text() == "keep"
    assert "exists" in capsys.readouterr().err
    assert main(["--out", str(tmp_path / "c.json"), "--sections", "balancers,warp"]) == 2
    assert main(["--out", str(tmp_path / "c.txt")]) == 2
    if not torch.cuda.is_available():
        assert main(["--out", str(tmp_path / "c.json"), "--device", "cuda"]) == 2
    assert (
        main(["--out", str(tmp_path / "c.json"), "--sections", "data", "--bundle-config", str(tmp_path / "x.yaml")])
        == 2
    )
    assert main(["--out", str(tmp_path / "c.json"), "--batch", "0"]) == 2
    assert main(["--out", str(tmp_path / "c.json"), "--patch", "16", "0", "16"]) == 2
    assert not (tmp_path / "c.json").exists()


def test_cli_tiny_run_writes_json(tmp_path, capsys):
    out = tmp_path / "sub" / "b.json"
    code = main(["--tiny", "--out", str(out), "--sections", "balancers", "--balancers", "joint,cggm", "--no-memory"])
    assert code == 0
    report = json.loads(out.read_text())
    assert report["meta"]["quick"] is False and set(report["balancers"]["per_balancer"]) == {"joint", "cggm"}
    assert report["config"]["bundle_config"] == str(BUNDLE_CONFIG)
    assert "cggm_time_ratio" in capsys.readouterr().out
    assert [p.name for p in out.parent.iterdir()] == ["b.json"]  # no temporary or partial file left


def test_cli_times_the_step_it_is_given(tmp_path):
    out = tmp_path / "b.json"
    argv = ["--tiny", "--out", str(out), "--sections", "balancers", "--balancers", "joint", "--no-memory"]
    assert main([*argv, "--optimizer", "sgd", "--batch", "3", "--patch", "16", "16", "8"]) == 0
    base = json.loads(out.read_text())["config"]["base"]
    assert (base["optimizer"], base["batch"], base["patch"]) == ("sgd", 3, [16, 16, 8])


def test_cli_inference_options_reach_the_configuration():
    from brats_cggm.brats.inference.pipeline import DEFAULT_WORKERS

    args = cli.build_parser().parse_args(["--out", "b.json", "--tiny"])
    config = cli._configuration(args, ["inference"])
    assert config.infer_workers == DEFAULT_WORKERS and config.infer_candidate_roi is None
    assert config.infer_folder_cases >= 8  # "cases per minute over a folder of >= 8 cases"
    argv = ["--out", "b.json", "--tiny", "--infer-workers", "2", "--infer-candidate-roi", "32", "32", "16"]
    args = cli.build_parser().parse_args([*argv, "--infer-candidate-overlap", "0.125", "--infer-bundle", "run"])
    config = cli._configuration(args, ["inference"])
    assert (config.infer_workers, config.infer_candidate_roi) == (2, (32, 32, 16))
    assert (config.infer_candidate_overlap, config.infer_bundle) == (0.125, "run")


def test_cli_keeps_finished_sections_when_a_later_one_fails(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(runner, "step_scaling_benchmark", fail)
    out = tmp_path / "b.json"
    argv = ["--tiny", "--out", str(out), "--sections", "balancers,step_scaling", "--balancers", "joint", "--no-memory"]
    assert main(argv) == 1
    assert not out.exists()
    partial = json.loads((tmp_path / "b.partial.json").read_text())
    assert "joint" in partial["balancers"]["per_balancer"] and "step_scaling" not in partial


def test_default_bundle_config_is_the_checkout_one_or_named_when_missing(tmp_path, monkeypatch):
    assert default_bundle_config() == BUNDLE_CONFIG
    monkeypatch.setattr(cli, "BUNDLE_TRAIN_CONFIG", "missing.yaml")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as raised:
        default_bundle_config()
    assert "missing.yaml" in str(raised.value)
    assert "--bundle-config" in str(raised.value)
    assert main(["--out", str(tmp_path / "c.json"), "--sections", "data"]) == 2
    # sections that do not read the bundle run without one
    argv = [
        "--tiny",
        "--out",
        str(tmp_path / "d.json"),
        "--sections",
        "balancers",
        "--balancers",
        "joint",
        "--no-memory",
    ]
    assert main(argv) == 0
    assert json.loads((tmp_path / "d.json").read_text())["config"]["bundle_config"] is None


def test_module_is_the_worker_entry_only(tmp_path):
    """``python -m brats_cggm.benchmarking`` runs workers; the command is ``brats-cggm-benchmark`` alone."""
    result = subprocess.run(
        [sys.executable, "-m", "brats_cggm.benchmarking", "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2 and "brats-cggm-benchmark" in result.stderr and not result.stdout
    result = subprocess.run(
        [sys.executable, "-m", "brats_cggm.benchmarking", "--worker", "nonsense", "{}"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1 and "unknown worker 'nonsense'" in result.stderr
