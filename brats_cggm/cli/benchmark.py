"""``brats-cggm-benchmark``: balancer overhead, whole-volume inference, data pipeline, scaling; one JSON report.

    brats-cggm-benchmark --quick --out bench_cpu.json
    brats-cggm-benchmark --device cuda --preset full --out bench_gpu.json

The report is one file, hence ``--out FILE.json`` (``--work-dir`` is scratch space, not output). The
measurements are :func:`brats_cggm.benchmarking.run_benchmarks`; see ``docs/performance.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from brats_cggm.benchmarking.config import BenchmarkConfig, benchmark_config
from brats_cggm.benchmarking.report import format_report, write_report
from brats_cggm.benchmarking.runner import DEFAULT_SECTIONS, SECTIONS, run_benchmarks
from brats_cggm.cli.common import CommandParser, non_negative_int, overlap_fraction, positive_int
from brats_cggm.core import resources
from brats_cggm.core.files import refuse_existing

__all__ = ["BUNDLE_TRAIN_CONFIG", "build_parser", "default_bundle_config", "main"]

PROG = "brats-cggm-benchmark"

#: The shipped bundle config whose loader the data section benchmarks by default (``bundles/brats_cggm/configs/``).
BUNDLE_TRAIN_CONFIG = "train.yaml"


class UsageError(ValueError):
    """A bad command-line argument (exit status 2)."""


def build_parser(prog: str = PROG) -> CommandParser:
    """The arguments of ``brats-cggm-benchmark``; ``prog`` is the name its usage line shows."""
    p = CommandParser(
        prog=prog,
        description="Benchmark brats-cggm: balancer overhead, inference, data pipeline, scaling. "
        "Prints a table and writes a JSON report.",
    )
    p.add_argument("--out", required=True, help="JSON report to write (refused if it exists, unless --overwrite)")
    p.add_argument("--quick", action="store_true", help="fewer repetitions and sizes (CPU: < 10 min on 2 cores)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--preset", choices=("cpu", "full"), default="cpu", help="network preset of build_network")
    p.add_argument(
        "--sections",
        default=",".join(DEFAULT_SECTIONS),
        help=f"comma-separated subset of {','.join(SECTIONS)} (default: all but inference_settings)",
    )
    p.add_argument("--balancers", default=None, help="comma-separated balancer names (default: all registered)")
    p.add_argument("--no-memory", action="store_true", help="skip the subprocess peak-memory measurements")
    p.add_argument("--patch", type=int, nargs=3, default=None, help="training patch (default: the preset's)")
    p.add_argument("--batch", type=int, default=None, help="patches per timed step (default: 2)")
    p.add_argument(
        "--optimizer",
        choices=("adamw", "sgd"),
        default="adamw",
        help="the timed step's optimisers: the bundle's AdamW or configs/optimizers/sgd_paper.yaml's SGD",
    )
    p.add_argument(
        "--bundle-config",
        default=None,
        help="train.yaml whose loader is benchmarked (default: bundles/brats_cggm/configs/train.yaml, of the "
        "checkout brats_cggm is imported from or of the installed package; see brats_cggm.core.resources)",
    )
    inference = p.add_argument_group("inference section")
    inference.add_argument(
        "--infer-workers",
        type=non_negative_int,
        default=None,
        help="loader workers of the pipelined folder run (default: brats-cggm-infer's --workers default)",
    )
    inference.add_argument(
        "--infer-candidate-roi",
        type=positive_int,
        nargs=3,
        metavar=("X", "Y", "Z"),
        default=None,
        help="window of the candidate setting timed and scored beside the default one (default: the default's)",
    )
    inference.add_argument(
        "--infer-candidate-overlap",
        type=overlap_fraction,
        default=None,
        help="overlap of the candidate setting (default 0)",
    )
    inference.add_argument(
        "--infer-bundle",
        default=None,
        help="trained bundle (or training output_dir) whose weights the inference section runs, so that its Dice "
        "values mean something (default: random weights of --preset)",
    )
    sweep = p.add_argument_group(
        "inference_settings section (a sweep of CPU inference settings; needs --infer-bundle, a trained model)"
    )
    sweep.add_argument(
        "--sweep-setting",
        action="append",
        default=None,
        metavar="SPEC",
        help="a setting to compare with the reference, e.g. window=2,overlap=0.25,blend=constant,threads=1,"
        "dtype=bf16,channels_last,compile or backend=onnxruntime (window: multiple of the training patch or "
        "whole); repeat it; given, it replaces the default grid",
    )
    sweep.add_argument(
        "--sweep-reference",
        default=None,
        metavar="SPEC",
        help="the reference setting (default: today's inference: the training patch, the bundle's overlap, "
        "gaussian, the process's threads, fp32)",
    )
    sweep.add_argument(
        "--sweep-data",
        nargs="+",
        default=None,
        metavar="FOLDER",
        help="labelled phantom folders to segment (brats-cggm-phantoms output; default: fresh geometric phantoms)",
    )
    sweep.add_argument("--sweep-split", default=None, help="split.json: only its validation cases are segmented")
    sweep.add_argument("--sweep-cases", type=positive_int, default=None, help="cases per folder (default 6)")
    sweep.add_argument("--sweep-rounds", type=positive_int, default=None, help="timed rounds (default 3)")
    p.add_argument("--work-dir", default=None, help="scratch folder (default: a temporary one)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--tiny", action="store_true", help="toy sizes for smoke tests; the numbers mean nothing")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    return p


def default_bundle_config() -> Path:
    """The BraTS bundle's ``train.yaml``, as :func:`brats_cggm.core.resources.bundle_config` finds it.

    Returns:
        The checkout's or the installed package's ``bundles/brats_cggm/configs/train.yaml``.

    Raises:
        FileNotFoundError: it does not exist (the message names the path and ``--bundle-config``).
    """
    path = resources.bundle_config("brats_cggm", BUNDLE_TRAIN_CONFIG)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no bundle config there; pass --bundle-config PATH")
    return path


def _output_path(args: argparse.Namespace) -> Path:
    out = Path(args.out)
    try:
        refuse_existing([out], args.overwrite)
    except FileExistsError as exc:
        raise UsageError(str(exc)) from None
    if out.suffix != ".json":
        raise UsageError(f"--out {out}: expected a .json file name")
    return out


def _check_device(device: str) -> None:
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available")


def _sections(value: str) -> list[str]:
    sections = [s.strip() for s in value.split(",") if s.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise UsageError(f"--sections: unknown {sorted(unknown)}; choose from {SECTIONS}")
    return sections


def _bundle_config(value: str | None, needed: bool) -> str | None:
    """The ``--bundle-config`` path, or the default one; an error only where the data section needs it."""
    if value is not None:
        if needed and not Path(value).is_file():
            raise UsageError(f"--bundle-config {value}: no such file")
        return value
    try:
        return str(default_bundle_config())
    except FileNotFoundError as exc:
        if needed:
            raise UsageError(str(exc)) from None
        return None


def _configuration(args: argparse.Namespace, sections: Sequence[str]) -> BenchmarkConfig:
    config = benchmark_config(args.device, args.preset, quick=args.quick, tiny=args.tiny)
    if args.balancers:
        config.balancers = [b.strip() for b in args.balancers.split(",") if b.strip()]
    if args.no_memory:
        config.memory = False
    if args.batch is not None and args.batch < 1:
        raise UsageError(f"--batch {args.batch}: must be at least 1")
    if args.patch is not None and min(args.patch) < 1:
        raise UsageError(f"--patch {args.patch}: sizes must be at least 1")
    config.base = dataclasses.replace(
        config.base,
        optimizer=args.optimizer,
        batch=config.base.batch if args.batch is None else args.batch,
        patch=config.base.patch if args.patch is None else tuple(args.patch),
    )
    if args.infer_workers is not None:
        config.infer_workers = args.infer_workers
    if args.infer_candidate_roi is not None:
        config.infer_candidate_roi = tuple(args.infer_candidate_roi)
    if args.infer_candidate_overlap is not None:
        config.infer_candidate_overlap = args.infer_candidate_overlap
    config.infer_bundle = args.infer_bundle
    _sweep_configuration(config, args, sections)
    config.bundle_config = _bundle_config(args.bundle_config, needed=bool({"data", "dataset_scale"} & set(sections)))
    return config


def _sweep_configuration(config: BenchmarkConfig, args: argparse.Namespace, sections: Sequence[str]) -> None:
    """The ``--sweep-*`` options into ``config``, each setting checked here (a typo fails before any run)."""
    from brats_cggm.benchmarking.sections.inference_settings import parse_setting

    if args.sweep_setting is not None:
        config.sweep_settings = list(args.sweep_setting)
    if args.sweep_reference is not None:
        config.sweep_reference = args.sweep_reference
    for option, spec in [("--sweep-reference", config.sweep_reference)] + [
        ("--sweep-setting", s) for s in config.sweep_settings
    ]:
        try:
            parse_setting(spec)
        except ValueError as exc:
            raise UsageError(f"{option}: {exc}") from None
    if args.sweep_data is not None:
        missing = [f for f in args.sweep_data if not Path(f).is_dir()]
        if missing:
            raise UsageError(f"--sweep-data: not a folder: {', '.join(missing)}")
        config.sweep_data = list(args.sweep_data)
    if args.sweep_split is not None:
        if not Path(args.sweep_split).is_file():
            raise UsageError(f"--sweep-split {args.sweep_split}: no such file")
        config.sweep_split = args.sweep_split
    if args.sweep_cases is not None:
        config.sweep_cases = args.sweep_cases
    if args.sweep_rounds is not None:
        config.sweep_rounds = args.sweep_rounds
    if "inference_settings" in sections and not config.infer_bundle:
        raise UsageError("--sections inference_settings needs --infer-bundle (a trained run or bundle)")


def _run(config: BenchmarkConfig, sections: Sequence[str], work_dir: str | None, out: Path) -> dict[str, Any] | None:
    """Run the sections, saving the finished ones next to ``out`` as they come; None when one failed."""
    # the sections finished so far, in case a later one fails or the run is killed (time limits)
    partial = _partial_path(out)
    try:
        return run_benchmarks(
            config,
            sections,
            work_dir,
            log=lambda m: print(m, flush=True),
            on_section=lambda r: write_report(partial, r, overwrite=True),
        )
    except Exception as exc:
        print(f"error: benchmark failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        if partial.exists():
            print(f"the sections finished before the failure are in {partial}", file=sys.stderr)
        return None


def _partial_path(out: Path) -> Path:
    return out.with_name(out.stem + ".partial.json")


def _save(report: dict[str, Any], out: Path, overwrite: bool) -> None:
    write_report(out, report, overwrite)
    _partial_path(out).unlink(missing_ok=True)
    print(f"\nwrote {out}")


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point ``brats-cggm-benchmark``: run the benchmark, print its table, write its JSON report.

    Args:
        argv: arguments without the program name; ``sys.argv[1:]`` when None.

    Returns:
        0 on success, 1 when a benchmark failed, 2 for bad arguments.
    """
    args = build_parser().parse_args(argv)
    try:
        out = _output_path(args)
        _check_device(args.device)
        sections = _sections(args.sections)
        config = _configuration(args, sections)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    report = _run(config, sections, args.work_dir, out)
    if report is None:
        return 1
    report["meta"]["quick"] = args.quick
    print()
    print(format_report(report))
    _save(report, out, args.overwrite)
    return 0


if __name__ == "__main__":
    sys.exit(main())
