"""The benchmark report: the run's environment, the plain-text table, and the JSON file."""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import sys
from pathlib import Path
from typing import Any

import torch

__all__ = ["environment", "format_report", "write_report"]


def environment(device: str) -> dict[str, Any]:
    """The report's ``meta``: date, device and its name, CPU, library versions, load and the command.

    Args:
        device: ``"cpu"`` or ``"cuda"``.

    Returns:
        The ``meta`` entry (the run adds ``total_seconds`` and ``quick``).
    """
    import monai

    env: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": device,
        "torch": torch.__version__,
        "monai": monai.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if names:
            env["cpu"] = names[0]
    with contextlib.suppress(OSError):
        env["load_average"] = list(os.getloadavg())
    if device == "cuda" and torch.cuda.is_available():
        env["device_name"] = torch.cuda.get_device_name(0)
        env["cuda"] = torch.version.cuda
        env["cudnn"] = torch.backends.cudnn.version()
    else:
        env["device_name"] = env["cpu"]
    return env


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}{unit}"
    return f"{value}{unit}"


def _mib(value: Any) -> str:
    return "-" if value is None else f"{value / 2**20:.0f} MiB"


def _folder_lines(r: dict[str, Any]) -> list[str]:
    """The inference section's folder runs and its two settings (absent from reports older than them)."""
    if "folder" not in r:
        return []
    f = r["folder"]
    lines = [f"  folder of {f['cases']} phantom cases {f['case_shape']} (weights: {r.get('weights', 'random')}):"]
    for run in f["runs"]:
        stages = ", ".join(f"{k} {_fmt(v)}" for k, v in run["stages_s"].items())
        lines.append(
            f"    workers {run['workers']}: {_fmt(run['seconds_per_case'], ' s')} per case, "
            f"{_fmt(run['cases_per_minute'])} cases/min, end to end / network {_fmt(run['e2e_over_network'])}; "
            f"stages per case (s): {stages}"
        )
    lines.append(f"    pipeline speed-up over workers 0: x{_fmt(f['pipeline_speedup'])}")
    for s in r["settings"]:
        dice = ", ".join(f"{k.upper()} {v:.4f}" for k, v in s["dice"].items())
        lines.append(
            f"    {s['setting']:<9} window {s['roi']}, overlap {s['overlap']}: "
            f"{_fmt(s['seconds_per_case'], ' s')} per case, mean Dice {s['mean_dice']:.4f} ({dice})"
        )
    lines.append(
        f"    default / candidate time: x{_fmt(r['candidate_speedup'])}; "
        f"candidate - default mean Dice: {r['candidate_dice_change']:+.4f}"
    )
    return lines


def format_report(report: dict[str, Any]) -> str:
    """A plain-text table of a report from :func:`~brats_cggm.benchmarking.runner.run_benchmarks`.

    Args:
        report: the report.

    Returns:
        The table, one section after the other, then the ratios against their targets.
    """
    meta = report["meta"]
    lines = [
        f"brats-cggm benchmark, {meta['date']}, {meta['device_name']} ({meta['device']}), torch {meta['torch']}",
        f"base step: {report['config']['base']}",
    ]
    if "balancers" in report:
        lines += ["", f"{'balancer':<12}{'step s':>10}{'x joint':>9}{'peak (step)':>14}{'x joint':>9}{'peak RSS':>11}"]
        for name, r in report["balancers"]["per_balancer"].items():
            if "error" in r:
                lines.append(f"{name:<12}  error: {r['error']}")
                continue
            peak = r.get("cuda_peak_bytes", r.get("step_peak_bytes"))
            lines.append(
                f"{name:<12}{_fmt(r.get('step_time_s')):>10}{_fmt(r.get('time_ratio')):>9}"
                f"{_mib(peak):>14}{_fmt(r.get('mem_ratio')):>9}{_mib(r.get('peak_rss_bytes')):>11}"
            )
    if "inference" in report:
        r = report["inference"]
        lines += [
            "",
            f"inference {r['case_shape']} (window {r['roi']}, overlap {r['overlap']}): "
            f"{_fmt(r['seconds_per_case'], ' s')} per case end to end, sliding window alone "
            f"{_fmt(r['network_only_s'], ' s')}, ratio {_fmt(r['infer_ratio'])}, "
            f"peak RSS {_mib(r.get('peak_rss_bytes'))}"
            + (f", CUDA peak {_mib(r['cuda_peak_bytes'])}" if "cuda_peak_bytes" in r else ""),
            "  stages (s): " + ", ".join(f"{k} {_fmt(v)}" for k, v in r["stages_s"].items()),
        ]
        lines += _folder_lines(r)
    if "inference_settings" in report:
        from brats_cggm.benchmarking.sections.inference_settings import format_sweep_table

        r = report["inference_settings"]
        lines += [
            "",
            f"inference settings: {len(r['cases'])} case(s), {r['rounds']} round(s), training patch {r['patch']}",
            format_sweep_table(r),
        ]
    if "data" in report:
        r = report["data"]
        lines += [
            "",
            f"data pipeline ({r['dataset']}, {r['num_workers']} workers): "
            f"loader step {_fmt(r['loader_step_s'], ' s')}, "
            f"preloaded {_fmt(r['preloaded_step_s'], ' s')}, ratio {_fmt(r['load_ratio'])}; "
            f"cache built in {_fmt(r['cache_build_s'], ' s')}",
        ]
    if "step_scaling" in report:
        lines += [
            "",
            "step_scaling (step s): "
            + ", ".join(
                f"{'x'.join(map(str, p['patch']))}: {_fmt(p['step_time_s'])}" for p in report["step_scaling"]["patch"]
            )
            + " | "
            + ", ".join(
                f"{m['modalities']} mod: {_fmt(m['step_time_s'])}" for m in report["step_scaling"]["modalities"]
            ),
        ]
    if "variants" in report:
        lines += [
            "",
            "variants: "
            + ", ".join(
                f"{v['variant']}: "
                + (f"{_fmt(v['step_time_s'])} s (x{_fmt(v.get('speedup'))})" if "step_time_s" in v else v["error"])
                for v in report["variants"]
            ),
        ]
    if "dataset_scale" in report:
        r = report["dataset_scale"]
        lines += ["", f"scale ({len(r['cases'])} counts of {'x'.join(map(str, r['case_shape']))} cases):"]
        runs = r.get("runs")
        if runs:
            peaks = "/".join(f"{p['peak_anon_bytes'] / 1e6:.0f}" for p in runs["points"])
            lines.append(f"  bundle runs on {'/'.join(map(str, r['cases']))} cases: anonymous peaks {peaks} MB")
            for kind in ("anon", "file", "total"):
                lines.append(
                    f"  {kind}: {_fmt(runs[kind]['mb_per_case'])} MB per added case, "
                    f"{_fmt(runs[kind]['extrapolated_peak_gb'])} GB extrapolated to 1251 cases"
                )
        lines += [f"  loader {p['patch']}: ratio {_fmt(p['load_ratio'])}" for p in r["loader"]]
        lines.append(
            f"  build s/case: {_fmt(r['build']['one_worker_s_per_case'])} (1 process), "
            f"{_fmt(r['build']['all_workers_s_per_case'])} ({r['build']['all_workers_processes']})"
        )
    lines += [
        "",
        "ratios (target): " + ", ".join(f"{k} {_fmt(report.get(k))} (<= {t})" for k, t in report["targets"].items()),
    ]
    if report.get("skipped"):
        lines.append("skipped: " + "; ".join(report["skipped"]))
    return "\n".join(lines)


def write_report(path: str | os.PathLike, report: dict[str, Any], overwrite: bool = False) -> Path:
    """Write ``report`` as indented JSON, atomically (a killed run never leaves half a file).

    Args:
        path: the JSON file; its folder is created.
        report: the report.
        overwrite: replace an existing file.

    Returns:
        The path written.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    from brats_cggm.core.files import refuse_existing, write_json

    path = Path(path)
    refuse_existing([path], overwrite)
    return write_json(path, report)
