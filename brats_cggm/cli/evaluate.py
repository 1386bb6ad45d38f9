"""``brats-cggm-evaluate PRED_DIR REF_DIR``: BraTS challenge metrics of a folder of segmentations.

    brats-cggm-evaluate predictions/ BraTS2021_Training_Data/ --output-dir results/

Global Dice, HD95 and NSD and the lesion-wise metrics of every challenge region, with the official evaluator's
definitions and CSV column names (see :mod:`brats_cggm.brats.metrics.evaluation`); ``--hd95 directed`` gives MONAI's
HD95 instead of the official pooled one. This module reads the command line, refuses to overwrite results,
and prints the summary.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from brats_cggm.brats.data.labels import LABEL_CONVENTIONS
from brats_cggm.brats.data.nifti_checks import AFFINE_TOLERANCE, InputFileError
from brats_cggm.brats.inference.case_io import check_output_dir
from brats_cggm.brats.metrics.case_scores import ChallengeOptions
from brats_cggm.brats.metrics.evaluation import AUTO, EvaluationResult
from brats_cggm.brats.metrics.evaluation_report import write_results
from brats_cggm.brats.metrics.pairing import evaluate_folders
from brats_cggm.cli.common import CommandParser, non_negative_float, print_error
from brats_cggm.core.files import refuse_existing

__all__ = ["build_parser", "main"]

PROG = "brats-cggm-evaluate"

#: File names of the results, in ``--output-dir``.
RESULT_FILES = ("evaluation.csv", "evaluation_summary.json", "evaluation.md")

_CONVENTIONS = [AUTO, *sorted(LABEL_CONVENTIONS)]


def build_parser() -> CommandParser:
    """The arguments of ``brats-cggm-evaluate``."""
    p = CommandParser(
        prog=PROG,
        description="BraTS challenge metrics (global Dice/HD95/NSD, lesion-wise metrics) of ET, TC, WT, NETC, SNFH "
        "(and RC with 2023 labels), per case (CSV), summarised (JSON) and as a markdown table.",
    )
    p.add_argument("pred_dir", help="folder of predictions named <case_id>.nii.gz")
    p.add_argument("ref_dir", help="folder of references: <case>.nii.gz, <case>/<case>_seg.nii.gz, or an MSD folder")
    p.add_argument(
        "--labels",
        choices=_CONVENTIONS,
        default=AUTO,
        help="prediction labels (default auto: 3 present means brats2023, 4 without 3 brats2021; msd must be given)",
    )
    p.add_argument("--ref-labels", choices=_CONVENTIONS, help="reference labels (default: --labels)")
    p.add_argument(
        "--hd95",
        choices=("pooled", "directed"),
        default="pooled",
        help="pooled: the official BraTS evaluator's HD95 (default); directed: MONAI's compute_hausdorff_distance",
    )
    p.add_argument(
        "--min-lesion-volume",
        type=non_negative_float,
        default=0.0,
        metavar="MM3",
        help="reference lesions smaller than this are left out of the penalised lesion-wise scores (default 0)",
    )
    p.add_argument("--output-dir", help="where to write " + ", ".join(RESULT_FILES) + " (default PRED_DIR)")
    p.add_argument(
        "--affine-tolerance",
        type=non_negative_float,
        default=AFFINE_TOLERANCE,
        help="largest affine difference between a prediction and its reference",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing result files")
    return p


def result_paths(args: argparse.Namespace) -> tuple[Path, Path, Path]:
    """The CSV, JSON and markdown files to write, checked before any work: a writable folder, nothing replaced unasked.

    Raises:
        OSError: an unwritable folder, or an existing file without ``--overwrite``.
    """
    out_dir = Path(args.output_dir or args.pred_dir)
    paths = tuple(out_dir / name for name in RESULT_FILES)
    # an unwritable output folder would otherwise be found after evaluating every case
    check_output_dir(out_dir, "--output-dir" if args.output_dir else "PRED_DIR")
    refuse_existing(paths, args.overwrite)
    return paths  # type: ignore[return-value]


def _format(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def report(result: EvaluationResult, summary: dict[str, Any], paths: Sequence[Path]) -> int:
    """Print the summary, the cases missing on either side and the failed ones; the exit status."""
    print(f"{summary['n_evaluated']} of {summary['n_cases']} cases evaluated -> {', '.join(map(str, paths))}")
    print(f"  mean over cases; HD95 {summary['hd95']} (mm); lesion-wise: unmatched lesions count as 0 / 373")
    print("  region    Dice    HD95     NSD  lesion Dice  lesion HD95  empty ref")
    for region in summary["regions"]:
        m = {
            stem: summary["metrics"][f"{stem}_{region}"]["mean"]
            for stem in (
                "global_dsc",
                "global_hd95",
                "global_nsd",
                "lesionwise_penalised_dsc",
                "lesionwise_penalised_hd95",
            )
        }
        print(
            f"  {region.upper():6s} {_format(m['global_dsc']):>7s} {_format(m['global_hd95']):>7s} "
            f"{_format(m['global_nsd']):>7s} {_format(m['lesionwise_penalised_dsc']):>12s} "
            f"{_format(m['lesionwise_penalised_hd95']):>12s} {summary['empty_reference'][region]:>10d}"
        )
    for status, label in (("missing_prediction", "no prediction"), ("missing_reference", "no reference")):
        ids = result.ids(status)
        if ids:
            print(f"warning: {len(ids)} case(s) with {label}: {', '.join(ids)}", file=sys.stderr)
    for row in result.rows:
        if row["status"] == "error":
            print(f"error: {row['case_id']}: {row['error']}", file=sys.stderr)
    return 0 if result.complete and result.rows else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point ``brats-cggm-evaluate PRED_DIR REF_DIR``.

    Args:
        argv: arguments (without the program name); ``sys.argv[1:]`` when None.

    Returns:
        0 when every case was evaluated, 1 when a case is missing on either side or failed (the results are
        still written), or when nothing could be evaluated; 2 for bad arguments.
    """
    args = build_parser().parse_args(argv)
    options = ChallengeOptions(hd95=args.hd95, min_lesion_volume_mm3=args.min_lesion_volume)
    try:
        paths = result_paths(args)
        result = evaluate_folders(
            args.pred_dir, args.ref_dir, args.labels, args.ref_labels, args.affine_tolerance, options
        )
        summary = write_results(result, paths[0], paths[1], overwrite=args.overwrite, markdown_path=paths[2])
    except (OSError, InputFileError, ValueError) as exc:
        print_error(str(exc))
        return 1
    return report(result, summary, paths)


if __name__ == "__main__":
    sys.exit(main())
