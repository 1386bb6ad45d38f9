"""``brats-cggm-compare``: balancing methods on the BraTS bundle, same seeds and budget, one report.

    brats-cggm-compare --output-dir runs/compare --seeds 0 1 --max-epochs 20

Trains the BraTS bundle (phantoms by default) once per method and seed (one ``monai.bundle run`` process
each), scores each run's last-epoch network lesion-wise and valuates it on its validation cases (Shapley
contribution of each modality to the mean Dice, the 15 modality subsets; ``--no-shapley`` skips it; ``--absent``
says what an absent modality is there: ``mask``, the network's availability mask, by default, or ``zero-input``,
the image replaced by zeros, as in the figures before 0.2; each row and ``summary.md`` record it) and writes
``summary.md`` (the tests against joint, then markdown tables, mean ± std over seeds), ``runs.csv`` (one line per
run), ``rows.json``, ``statistics.json`` and, with matplotlib, ``modalities.png``, ``subset_dice.png`` and
``seeds.png`` (each seed's value beside the mean)
(:mod:`~brats_cggm.experiments.comparison_plots`) into ``--output-dir``.

Budget: ``--max-epochs`` for every method; validation once, at the end, unless ``val_interval`` is overridden.
The methods' epoch schedules are scaled to the budget unless ``--paper-schedules``: OPM's warm-up becomes
``max_epochs // 10`` epochs (none below 10 epochs; paper: 5 of ~50) and Re-learning diagnoses at
``max_epochs // 3`` and ``2·max_epochs // 3`` (none in a one-epoch run; paper: every 15–20 epochs, 2–3 times);
the summary says so.
``--override KEY=VALUE`` goes to every run (e.g. ``dataset_dir=/data/BraTS2021``, ``network_preset=full``,
``val_interval=10`` for validation curves). ``--smoke`` shrinks everything (6 phantoms of 32³, 16³ patches,
a tiny network) to check the pipeline in minutes on a CPU; its numbers mean nothing. ``--jobs N`` trains N
runs at a time (the phantoms are generated first; step times are then not comparable). Existing reports
and run folders in ``--output-dir`` are kept unless ``--overwrite``.

``--optimizer adamw sgd`` runs every method with each optimiser (``sgd``: the CGGM authors' SGD and schedule,
``configs/optimizers/sgd_paper.yaml``; its runs are named ``<method>-sgd``). ``--unimodal`` adds the joint
method on each modality alone per seed and optimiser, and each multimodal run's encoder gaps against them.

Statistics, fixed before the runs (:mod:`~brats_cggm.experiments.comparison_statistics`, docs/balancers.md):
for each metric of ``--family`` (default: ``val/dice/mean`` and ``robustness/mean_subsets``) every method against
joint with the same optimiser: the paired differences over common seeds, their mean and 95% CI, the paired
t-test's p, its Holm-adjusted p across the family and whether it is below ``--alpha`` (0.05), and the TOST
equivalence verdict at ``--equivalence-margin`` (0.01); ``summary.md``'s header and ``statistics.json`` state the
criterion, margin and family.

Data: ``--phantoms-per-seed`` gives each seed's runs their own phantom draw (``<output-dir>/phantoms/seed<k>``,
generator seed s0 + 100000·k); ``--test-phantoms N`` generates a held-out test set of N phantoms per seed
(``<output-dir>/test_phantoms/seed<k>``, generator seed s0 + 100000·k + 50000) on which every run's network is
measured once trained (the ``test/`` columns); the tests then read the test columns.
``--method NAME=OVERLAY[,OVERLAY...]`` adds a named method: the overlays applied in order after the bundle's
``train.yaml`` (ablations); without ``--methods`` the comparison is then joint and the named methods.
``--publish DIR`` copies the reports to ``DIR`` (e.g. ``docs/raw/<name>``) with the paths into ``--output-dir``
made relative to it.

The reports are rewritten after every finished run, so they always hold the results so far. ``--resume``
continues a comparison in the same ``--output-dir``: runs whose ``metrics.json`` exists are not trained again,
and their diagnostics are reused once done (a comparison of several hours can span sessions).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from brats_cggm.brats.analysis.absence import ABSENCE_HELP, ABSENCE_MODES
from brats_cggm.cli.common import CommandParser
from brats_cggm.core.files import existing_file_error
from brats_cggm.experiments.brats_comparison import (
    BASELINE,
    OPTIMIZER_OVERLAYS,
    ComparisonSettings,
    default_methods,
    plan_runs,
    run_and_valuate,
)
from brats_cggm.experiments.comparison_columns import (
    DICE_COLUMNS,
    GAP_COLUMNS,
    LESIONWISE_COLUMNS,
    MODALITY_DICE_COLUMNS,
    ROBUSTNESS_COLUMNS,
    SHAPLEY_COLUMNS,
    dice_key,
    subset_dice_key,
)
from brats_cggm.experiments.comparison_statistics import DEFAULT_ALPHA, DEFAULT_FAMILY, DEFAULT_MARGIN
from brats_cggm.experiments.comparison_summary import summary_markdown, summary_statistics
from brats_cggm.experiments.reports import existing_reports, publish_reports, write_reports

__all__ = ["build_parser", "main", "parse_args"]

PROG = "brats-cggm-compare"

#: The columns ``--family`` accepts (and any ``subset_dice/<subset>``).
FAMILY_COLUMNS = (
    *DICE_COLUMNS,
    *LESIONWISE_COLUMNS,
    *ROBUSTNESS_COLUMNS,
    *MODALITY_DICE_COLUMNS,
    *SHAPLEY_COLUMNS,
    *GAP_COLUMNS,
)


def build_parser() -> CommandParser:
    """The arguments of ``brats-cggm-compare``."""
    parser = CommandParser(
        prog=PROG, description="Balancing methods on the BraTS bundle: same seeds and budget, one report."
    )
    methods = default_methods()
    parser.add_argument(
        "--output-dir", type=Path, default=Path("runs/compare"), help="runs and reports (default: %(default)s)"
    )
    parser.add_argument(
        "--methods", nargs="+", default=None, choices=methods, help="default: all (joint only with --method)"
    )
    parser.add_argument(
        "--method",
        action="append",
        default=[],
        metavar="NAME=OVERLAY[,OVERLAY...]",
        help="a named method: overlays applied in order after the bundle's train.yaml (e.g. an ablation)",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="default: %(default)s")
    parser.add_argument(
        "--extra-seeds",
        action="append",
        default=[],
        metavar="NAME=SEED[,SEED...]",
        help="more seeds for one method (e.g. the key arms at five seeds, the others at --seeds)",
    )
    parser.add_argument("--max-epochs", type=int, default=20, help="epochs of every run (default: %(default)s)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at the same time (step times then not comparable)")
    parser.add_argument("--device", default=None, help="training and valuation device (default: the bundle's)")
    parser.add_argument("--paper-schedules", action="store_true", help="keep the overlays' epoch schedules")
    parser.add_argument("--no-shapley", action="store_true", help="skip the modality valuation")
    parser.add_argument("--absent", choices=ABSENCE_MODES, default=ABSENCE_MODES[0], help=ABSENCE_HELP)
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE", help="to every run")
    parser.add_argument("--smoke", action="store_true", help="tiny phantoms and network: a pipeline check only")
    parser.add_argument(
        "--optimizer",
        nargs="+",
        default=["adamw"],
        choices=sorted(OPTIMIZER_OVERLAYS),
        help="optimisers every method runs with (default: adamw; sgd: the CGGM authors')",
    )
    parser.add_argument(
        "--unimodal", action="store_true", help="add one-modality joint runs and each run's encoder gaps"
    )
    parser.add_argument(
        "--family",
        nargs="+",
        default=list(DEFAULT_FAMILY),
        metavar="METRIC",
        help="the metrics tested against joint, fixed before the runs (default: %(default)s)",
    )
    parser.add_argument(
        "--equivalence-margin",
        type=float,
        default=DEFAULT_MARGIN,
        help="TOST equivalence margin, in the metric's units (default: %(default)s)",
    )
    parser.add_argument(
        "--alpha", type=float, default=DEFAULT_ALPHA, help="family-wise level (Holm) and TOST level (default: 0.05)"
    )
    parser.add_argument(
        "--phantoms-per-seed", action="store_true", help="each seed's runs train on their own phantom draw"
    )
    parser.add_argument(
        "--test-phantoms",
        type=int,
        default=0,
        metavar="N",
        help="a held-out test set of N phantoms per seed, used only for the final test/ columns",
    )
    parser.add_argument(
        "--publish", type=Path, default=None, metavar="DIR", help="copy the reports to DIR with relative paths"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace the reports and runs in --output-dir")
    parser.add_argument(
        "--resume", action="store_true", help="continue the comparison in --output-dir (skip finished runs)"
    )
    return parser


def _parse_overrides(parser: argparse.ArgumentParser, items: Sequence[str]) -> dict[str, str]:
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--override {item!r}: expected KEY=VALUE")
        overrides[key] = value
    return overrides


def _parse_methods(parser: argparse.ArgumentParser, items: Sequence[str]) -> dict[str, tuple[Path, ...]]:
    """``--method NAME=OVERLAY[,OVERLAY...]`` → name → overlays (each an existing file)."""
    named: dict[str, tuple[Path, ...]] = {}
    for item in items:
        name, sep, files = item.partition("=")
        overlays = tuple(Path(f) for f in files.split(",") if f)
        if not sep or not name or not overlays:
            parser.error(f"--method {item!r}: expected NAME=OVERLAY[,OVERLAY...]")
        if "/" in name or name in default_methods() or name in named:
            parser.error(f"--method {item!r}: the name must be new and a folder name (no '/')")
        missing = [str(f) for f in overlays if not f.is_file()]
        if missing:
            parser.error(f"--method {item!r}: no file {missing[0]}")
        named[name] = overlays
    return named


def _parse_extra_seeds(parser: argparse.ArgumentParser, items: Sequence[str]) -> dict[str, list[int]]:
    """``--extra-seeds NAME=SEED[,SEED...]`` → method name → seeds."""
    extra: dict[str, list[int]] = {}
    for item in items:
        name, sep, seeds = item.partition("=")
        try:
            values = [int(seed) for seed in seeds.split(",")]
        except ValueError:
            values = []
        if not sep or not name or not values:
            parser.error(f"--extra-seeds {item!r}: expected NAME=SEED[,SEED...]")
        extra.setdefault(name, []).extend(values)
    return extra


def _check_family(parser: argparse.ArgumentParser, family: Sequence[str]) -> list[str]:
    for metric in family:
        if metric not in FAMILY_COLUMNS and not metric.startswith(subset_dice_key("")):
            parser.error(f"--family {metric!r}: not a column of the rows; choose from {', '.join(FAMILY_COLUMNS)}")
    return list(dict.fromkeys(family))


def parse_args(argv: Sequence[str] | None = None) -> tuple[ComparisonSettings, argparse.Namespace]:
    """The comparison the command line asks for, and the remaining options (``jobs``, ``overwrite``).

    Raises:
        SystemExit: a malformed command line (argparse's usage message).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.max_epochs < 1:
        parser.error("--max-epochs must be at least 1")
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    if args.resume and args.overwrite:
        parser.error("--resume keeps the runs in --output-dir, --overwrite replaces them: choose one")
    if not args.equivalence_margin > 0 or not 0 < args.alpha < 1:
        parser.error("--equivalence-margin must be positive and --alpha in (0, 1)")
    if args.test_phantoms < 0:
        parser.error("--test-phantoms must be at least 0")
    named = _parse_methods(parser, args.method)
    methods = args.methods if args.methods is not None else ([BASELINE] if named else default_methods())
    try:
        settings = ComparisonSettings(
            out_dir=args.output_dir,
            methods=[*dict.fromkeys(methods), *named],
            seeds=args.seeds,
            extra_seeds=_parse_extra_seeds(parser, args.extra_seeds),
            max_epochs=args.max_epochs,
            device=args.device,
            paper_schedules=args.paper_schedules,
            shapley=not args.no_shapley,
            smoke=args.smoke,
            extra_overrides=_parse_overrides(parser, args.override),
            optimizers=list(dict.fromkeys(args.optimizer)),
            unimodal=args.unimodal,
            resume=args.resume,
            absent=args.absent,
            method_overlays=named,
            phantoms_per_seed=args.phantoms_per_seed,
            test_phantoms=args.test_phantoms,
            family=_check_family(parser, args.family),
            equivalence_margin=args.equivalence_margin,
            alpha=args.alpha,
        )
    except ValueError as exc:  # e.g. phantoms per seed for runs on another data set
        parser.error(str(exc))
    return settings, args


def _refuse_existing(settings: ComparisonSettings, overwrite: bool) -> bool:
    """Whether earlier results in the output folder stop the comparison (reported on stderr)."""
    if settings.resume:
        return False
    names = list(dict.fromkeys(run.name for run in plan_runs(settings)))
    existing = existing_reports(settings.out_dir, names)
    if existing and not overwrite:
        error = existing_file_error(existing[0], "or another --output-dir (--resume continues it)")
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return True
    return False


def _plot_saver(out_dir: Path, family: Sequence[str]) -> Callable[[Sequence[dict[str, Any]]], None]:
    """Draws the comparison's figures (``seeds.png``: the family's metrics); without matplotlib it says so once and
    the comparison goes on."""
    warned: list[bool] = []

    def save_plots(rows: Sequence[dict[str, Any]]) -> None:
        from brats_cggm.experiments.comparison_plots import write_comparison_plots

        try:
            write_comparison_plots(rows, out_dir, metrics=family)
        except ImportError as exc:
            if not warned:
                print(f"{PROG}: warning: no figures: {exc}", file=sys.stderr)
                warned.append(True)

    return save_plots


def _print_runs(rows: Sequence[dict[str, Any]]) -> None:
    for row in rows:
        print(
            f"{row['method']} seed {row['seed']}: mean Dice {row['validation'].get(dice_key('mean'), float('nan')):.3f}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point ``brats-cggm-compare``; 0 on success, 1 when ``--output-dir`` holds results (and
    neither ``--resume`` nor ``--overwrite``) or a run failed (the reports then hold the runs finished so far)."""
    logging.basicConfig(level=logging.WARNING)
    settings, args = parse_args(argv)
    if _refuse_existing(settings, args.overwrite):
        return 1
    save_plots = _plot_saver(settings.out_dir, settings.family)

    def save_partial(rows: list[dict[str, Any]]) -> None:
        # The comparison owns the folder from here on: each call replaces the previous partial reports.
        statistics = summary_statistics(rows, settings)
        write_reports(settings.out_dir, summary_markdown(rows, settings), rows, overwrite=True, statistics=statistics)
        save_plots(rows)

    try:
        rows = run_and_valuate(settings, jobs=args.jobs, on_row=save_partial)
    except RuntimeError as exc:
        print(
            f"{PROG}: error: {exc}; the reports in {settings.out_dir} hold the runs finished so far, "
            "--resume continues the comparison",
            file=sys.stderr,
        )
        return 1
    _print_runs(rows)
    summary = summary_markdown(rows, settings)
    write_reports(settings.out_dir, summary, rows, overwrite=True, statistics=summary_statistics(rows, settings))
    save_plots(rows)
    print(summary)
    if args.publish is not None:
        publish_reports(settings.out_dir, args.publish, overwrite=True)
        print(f"published the reports to {args.publish}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
