"""The inference-settings sweep measures what brats-cggm-infer gives, and refuses bad settings clearly."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from brats_cggm.benchmarking.sections.inference import phantom_dice
from brats_cggm.benchmarking.sections.inference_settings import (
    SweepSetting,
    format_sweep_table,
    inference_settings_benchmark,
    parse_setting,
    window_size,
)
from brats_cggm.brats.inference.case_io import find_cases
from brats_cggm.cli import benchmark as bench_cli
from brats_cggm.cli import infer as infer_cli
from tests.helpers.bench_tiny import one_thread, tiny_config  # noqa: F401


@pytest.fixture
def one_case(tmp_path: Path, phantom_dataset: Path) -> Path:
    """A folder with the first phantom case alone (its labels beside it)."""
    case = sorted(p for p in phantom_dataset.iterdir() if p.is_dir())[0]
    folder = tmp_path / "one_case"
    shutil.copytree(case, folder / case.name)
    return folder


def run_sweep(work: Path, run_dir: Path, data: Path, setting: str, rounds: int) -> dict:
    """The sweep of one setting against the reference, on the first case of ``data``."""
    config = tiny_config(
        infer_bundle=str(run_dir), sweep_data=[str(data)], sweep_settings=[setting], sweep_cases=1, sweep_rounds=rounds
    )
    return inference_settings_benchmark(config, work, log=lambda m: None)


def test_sweep_reference_dice_is_brats_cggm_infer_dice_and_ratios_come_from_the_run(tmp_path, tiny_run_dir, one_case):
    result = run_sweep(tmp_path / "work", tiny_run_dir, one_case, "window=whole,overlap=0,blend=constant", rounds=2)
    reference, other = result["settings"]
    assert reference["setting"] == "reference" and reference["label"].startswith("window=1,overlap=0.5,blend=gaussian")
    assert result["cases"] == [{"dataset": "one_case", "case_id": next(one_case.iterdir()).name}]

    # what users get: brats-cggm-infer with its defaults on the same case
    out = tmp_path / "infer_out"
    assert infer_cli.main(["--input", str(one_case), "--bundle", str(tiny_run_dir), "--output-dir", str(out)]) == 0
    cases, _ = find_cases(one_case)
    assert reference["mean_dice"] == pytest.approx(phantom_dice(cases, out)["mean"], abs=1e-12)
    assert reference["windows"] == [[32, 32, 32]]
    assert all(s % 8 == 0 for s in other["windows"][0])

    # ratios are the reference's seconds over the setting's, both of this run
    assert other["speedup"] == pytest.approx(reference["seconds_per_case"] / other["seconds_per_case"])
    assert other["network_speedup"] == pytest.approx(reference["network_s_per_case"] / other["network_s_per_case"])
    assert other["dice_change"] == pytest.approx(other["mean_dice"] - reference["mean_dice"])
    assert reference["speedup"] == 1.0
    assert len(reference["runs"]) == len(other["runs"]) == 2
    assert len(format_sweep_table(result).splitlines()) == 4


def test_parse_setting_keeps_the_base_and_rejects_bad_values():
    base = SweepSetting(overlap=0.5, threads=2)
    s = parse_setting("window=2, overlap=0, dtype=bf16, channels_last", base)
    assert s == SweepSetting(window=2, overlap=0.0, threads=2, dtype="bf16", channels_last=True)
    assert parse_setting("", base) == base
    assert parse_setting("compile=0,window=whole", base) == SweepSetting(window="whole", overlap=0.5, threads=2)
    for spec, message in [
        ("window=0", "positive integer multiple or 'whole'"),
        ("window=1.5", "positive integer multiple"),
        ("overlap=1", r"in \[0, 1\)"),
        ("overlap=x", r"in \[0, 1\)"),
        ("blend=median", "choose from"),
        ("threads=0", "positive integer"),
        ("dtype=fp16", "choose from"),
        ("compile=maybe", "expected 0 or 1"),
        ("window", "needs a value"),
        ("roi=64", "unknown key 'roi'"),
        ("backend=tensorrt", "choose from"),
        ("backend=onnxruntime,channels_last", "fp32 without channels_last or compile"),
        ("backend=onnxruntime,dtype=bf16", "fp32 without channels_last or compile"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_setting(spec)


def test_onnxruntime_backend_segments_as_torch_does(tmp_path, tiny_run_dir, one_case):
    pytest.importorskip("onnxruntime")
    result = run_sweep(tmp_path / "work", tiny_run_dir, one_case, "backend=onnxruntime", rounds=1)
    onnx = result["settings"][1]
    assert "error" not in onnx and onnx["label"].endswith(",backend=onnxruntime")
    assert (tmp_path / "work" / "sweep_out" / "network_1.onnx").is_file()
    # logits within 1e-3 of torch's: at most a few voxels at the 0.5 threshold can change label
    assert abs(onnx["dice_change"]) < 1e-3


def test_window_size_multiples_and_whole_volume():
    assert window_size(2, (32, 32, 32), (40, 50, 30)) == (64, 64, 64)
    assert window_size("whole", (32, 32, 32), (40, 50, 30)) == (40, 56, 32)
    assert window_size("whole", (32, 32, 32), (40, 50, 30), divisor=16) == (48, 64, 32)


def test_cli_sweep_options_are_checked(tmp_path, capsys):
    out = str(tmp_path / "r.json")
    base = ["--out", out, "--tiny", "--sections", "inference_settings"]
    assert bench_cli.main([*base, "--infer-bundle", "run", "--sweep-setting", "overlap=2"]) == 2
    assert "--sweep-setting: setting 'overlap=2': overlap=2" in capsys.readouterr().err
    assert bench_cli.main(base) == 2
    assert "needs --infer-bundle" in capsys.readouterr().err
    assert bench_cli.main([*base, "--infer-bundle", "run", "--sweep-data", str(tmp_path / "none")]) == 2
    assert "--sweep-data: not a folder" in capsys.readouterr().err
    # the sweep is asked for: a plain run's sections stay as they were
    assert "inference_settings" not in bench_cli.build_parser().parse_args(["--out", out]).sections
