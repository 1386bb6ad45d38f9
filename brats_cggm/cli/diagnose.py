"""``brats-cggm-diagnose RUN_DIR ...``: imbalance diagnostics of trained runs.

The library: :mod:`brats_cggm.brats.analysis.diagnostics`.

    brats-cggm-diagnose runs/cggm/seed0 runs/cggm/seed1 \\
        --unimodal flair=runs/flair/seed0 --unimodal flair=runs/flair/seed1 --output-dir runs/cggm/diagnostics

Steps: check the arguments and the report folder; for each run, probe each encoder that has a unimodal run
(the under-optimisation gap), valuate the 15 non-empty modality subsets (robustness) and the Shapley shares,
an absent modality being what ``--absent`` says (default ``mask``: the network's availability mask; ``zero-input``:
the image replaced by zeros, the figures before 0.2; the reports record it);
write ``diagnostics.json``, ``diagnostics.md`` and the plots. A modality's ``--unimodal`` runs pair with the runs
in order (one per run), or one serves them all. A unimodal run is the bundle trained with
``--modalities "['flair']"`` (same data, seed and network). Each run's data set, seed and validation share are
those it recorded (``configs/split.json``); runs of versions that did not record them need ``--dataset-dir``,
``--seeds`` and ``--val-fraction``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from brats_cggm.brats.analysis.absence import ABSENCE_HELP, ABSENCE_MODES
from brats_cggm.cli.common import CommandParser, positive_int, print_error

__all__ = ["build_parser", "main", "unimodal_runs"]

PROG = "brats-cggm-diagnose"


def build_parser() -> CommandParser:
    """The arguments of ``brats-cggm-diagnose``."""
    parser = CommandParser(prog=PROG, description="Imbalance diagnostics of trained multimodal BraTS runs.")
    parser.add_argument("run_dirs", nargs="+", type=Path, help="training output_dir(s) of multimodal runs")
    parser.add_argument(
        "--unimodal",
        action="append",
        default=[],
        metavar="M=RUN_DIR",
        help="a run of the bundle on modality M alone; repeat per modality and per run",
    )
    parser.add_argument(
        "--dataset-dir",
        type=Path,
        default=None,
        help="the data set the runs trained on (default: the one each recorded)",
    )
    parser.add_argument("--output-dir", required=True, type=Path, help="folder for diagnostics.json/.md and plots")
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=None, help="each run's seed (default: the one each recorded)"
    )
    parser.add_argument(
        "--val-fraction", type=float, default=None, help="the runs' val_fraction (default: the one each recorded)"
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda or cuda:N")
    parser.add_argument(
        "--weights",
        choices=("best", "last"),
        default="best",
        help="each run's best validation network (models/model.pt; a run without one is refused) or its last "
        "epoch's (models/checkpoint.pt); the report names the file used",
    )
    parser.add_argument(
        "--probe-steps",
        type=positive_int,
        default=None,
        help="probe budget in steps (default: ProbeSettings.max_steps, 3000; a fit stops earlier on a plateau)",
    )
    parser.add_argument("--no-shapley", action="store_true", help="skip the subset valuation (robustness, Shapley)")
    parser.add_argument("--absent", choices=ABSENCE_MODES, default=ABSENCE_MODES[0], help=ABSENCE_HELP)
    parser.add_argument("--no-plots", action="store_true", help="write no plots (no matplotlib needed)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier report in --output-dir")
    return parser


def unimodal_runs(items: Sequence[str], num_runs: int) -> list[dict[str, Path]]:
    """Pair the ``--unimodal M=RUN_DIR`` items with the runs.

    Args:
        items: the ``M=RUN_DIR`` texts, in command-line order.
        num_runs: the number of multimodal runs.

    Returns:
        One ``modality → unimodal run folder`` mapping per multimodal run.

    Raises:
        ValueError: a malformed item, or a modality with neither one run nor one per multimodal run.
    """
    by_modality: dict[str, list[Path]] = {}
    for item in items:
        modality, sep, folder = item.partition("=")
        if not sep or not modality or not folder:
            raise ValueError(f"--unimodal {item!r}: expected M=RUN_DIR, e.g. flair=runs/flair/seed0")
        by_modality.setdefault(modality, []).append(Path(folder))
    for modality, folders in by_modality.items():
        if len(folders) not in (1, num_runs):
            raise ValueError(
                f"--unimodal {modality}: {len(folders)} runs for {num_runs} multimodal runs (give 1 or {num_runs})"
            )
    return [{m: folders[i if len(folders) > 1 else 0] for m, folders in by_modality.items()} for i in range(num_runs)]


def parse_arguments(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[dict[str, Path]]]:
    """Parse and check the arguments; returns them and the unimodal runs of each run.

    Raises:
        SystemExit: bad arguments (status 2, with argparse's usage message).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.seeds is None:
        args.seeds = [None] * len(args.run_dirs)
    if len(args.seeds) != len(args.run_dirs):
        parser.error(f"--seeds: {len(args.seeds)} seeds for {len(args.run_dirs)} runs")
    if args.val_fraction is not None and not 0.0 < args.val_fraction < 1.0:
        parser.error(f"--val-fraction must be between 0 and 1, got {args.val_fraction}")
    try:
        unimodal = unimodal_runs(args.unimodal, len(args.run_dirs))
    except ValueError as exc:
        parser.error(str(exc))
    return args, unimodal


def check_output(args: argparse.Namespace) -> None:
    """Refuse an existing report before any work (the library checks again before writing).

    Raises:
        FileExistsError: a report file exists and no ``--overwrite``.
        NotADirectoryError: ``--output-dir`` is a file.
    """
    from brats_cggm.brats.analysis.diagnostics_report import DIAGNOSTICS_FILES
    from brats_cggm.core.files import refuse_existing

    if args.output_dir.exists() and not args.output_dir.is_dir():
        raise NotADirectoryError(f"--output-dir {args.output_dir} is a file, not a folder")
    refuse_existing((args.output_dir / name for name in DIAGNOSTICS_FILES), args.overwrite, "to replace the report")


def check_weights(args: argparse.Namespace, unimodal: Sequence[dict[str, Path]]) -> None:
    """Refuse, before any work, a run (multimodal or unimodal) without the network ``--weights`` asks for.

    Raises:
        FileNotFoundError: ``--weights best`` and a run has no ``models/model.pt`` (named, with the advice to use
            ``--weights last``).
    """
    from brats_cggm.brats.analysis.runs import run_weights

    for run_dir in [*args.run_dirs, *(folder for runs in unimodal for folder in runs.values())]:
        if Path(run_dir).is_dir():  # a missing folder is reported by name when the run is loaded
            run_weights(run_dir, args.weights)


def diagnose(args: argparse.Namespace, unimodal: Sequence[dict[str, Path]]) -> list[dict[str, Any]]:
    """Diagnose every run; returns their reports."""
    from brats_cggm.brats.analysis.diagnostics import diagnose_run
    from brats_cggm.brats.analysis.probes import ProbeSettings
    from brats_cggm.core.devices import resolve_device

    device = resolve_device(args.device)
    probe = ProbeSettings() if args.probe_steps is None else ProbeSettings(max_steps=args.probe_steps)
    references: dict = {}  # one measurement per unimodal run serving several runs
    return [
        diagnose_run(
            run_dir,
            args.dataset_dir,
            unimodal[i],
            seed=args.seeds[i],
            val_fraction=args.val_fraction,
            device=device,
            probe=probe,
            shapley=not args.no_shapley,
            weights=args.weights,
            reference_cache=references,
            absent=args.absent,
        )
        for i, run_dir in enumerate(args.run_dirs)
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point ``brats-cggm-diagnose``.

    Returns:
        0 on success, 1 on an error (missing run or data, existing report, mismatched unimodal run), 2 for bad
        arguments.
    """
    try:
        args, unimodal = parse_arguments(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from brats_cggm.brats.analysis.diagnostics_report import write_diagnostics_report

    try:
        check_output(args)
        check_weights(args, unimodal)
        reports = diagnose(args, unimodal)
        written = write_diagnostics_report(reports, args.output_dir, args.overwrite, plots=not args.no_plots)
    except (OSError, ValueError, KeyError, RuntimeError, ImportError) as exc:
        print_error(str(exc), PROG)
        return 1
    print((args.output_dir / "diagnostics.md").read_text(), end="")
    print(f"wrote {', '.join(p.name for p in written)} to {args.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
