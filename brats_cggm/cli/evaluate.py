"""``brats-cggm-evaluate PRED_DIR REF_DIR``: Dice and HD95 of ET, TC and WT of a folder of segmentations.

    brats-cggm-evaluate predictions/ BraTS2021_Training_Data/ --output-dir results/

The metrics and the matching of predictions to references are :mod:`brats_cggm.brats.evaluation`; this
module reads the command line, refuses to overwrite results, and prints the summary.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from brats_cggm.brats.evaluation import METRIC_NAMES, EvaluationResult, evaluate_folders, write_results
from brats_cggm.brats.inference_io import check_output_dir
from brats_cggm.brats.labels import LABEL_CONVENTIONS
from brats_cggm.brats.nifti_checks import AFFINE_TOLERANCE, InputFileError
from brats_cggm.cli.common import CommandParser, non_negative_float, print_error

__all__ = ["build_parser", "main"]

PROG = "brats-cggm-evaluate"


def build_parser() -> CommandParser:
    """The arguments of ``brats-cggm-evaluate``."""
    p = CommandParser(
        prog=PROG,
        description="Dice and HD95 (mm) of ET, TC and WT, per case (CSV) and summarised (JSON), BraTS conventions.",
    )
    p.add_argument("pred_dir", help="folder of predictions named <case_id>.nii.gz")
    p.add_argument("ref_dir", help="folder of references: <case>.nii.gz, <case>/<case>_seg.nii.gz, or an MSD folder")
    p.add_argument("--labels", choices=sorted(LABEL_CONVENTIONS), default="brats2021", help="prediction labels")
    p.add_argument("--ref-labels", choices=sorted(LABEL_CONVENTIONS), help="reference labels (default: --labels)")
    p.add_argument("--output-dir", help="where to write evaluation.csv and evaluation_summary.json (default PRED_DIR)")
    p.add_argument(
        "--affine-tolerance",
        type=non_negative_float,
        default=AFFINE_TOLERANCE,
        help="largest affine difference between a prediction and its reference",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing result files")
    return p


def result_paths(args: argparse.Namespace) -> tuple[Path, Path]:
    """The CSV and JSON files to write, checked before any work: a writable folder, no file to replace unasked.

    Raises:
        OSError: an unwritable folder, or an existing file without ``--overwrite``.
    """
    out_dir = Path(args.output_dir or args.pred_dir)
    csv_path, json_path = out_dir / "evaluation.csv", out_dir / "evaluation_summary.json"
    # an unwritable output folder would otherwise be found after evaluating every case
    check_output_dir(out_dir, "--output-dir" if args.output_dir else "PRED_DIR")
    for path in (csv_path, json_path):
        if path.exists() and not args.overwrite:
            raise FileExistsError(f"{path}: exists; pass --overwrite to replace it")
    return csv_path, json_path


def _format(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def report(result: EvaluationResult, summary: dict[str, Any], csv_path: Path, json_path: Path) -> int:
    """Print the summary, the cases missing on either side and the failed ones; the exit status."""
    print(f"{summary['n_evaluated']} of {summary['n_cases']} cases evaluated -> {csv_path}, {json_path}")
    for name in METRIC_NAMES:
        m = summary["metrics"][name]
        print(f"  {name:8s} mean {_format(m['mean'])}  std {_format(m['std'])}  median {_format(m['median'])}")
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
    try:
        csv_path, json_path = result_paths(args)
        result = evaluate_folders(args.pred_dir, args.ref_dir, args.labels, args.ref_labels, args.affine_tolerance)
        summary = write_results(result, csv_path, json_path, overwrite=args.overwrite)
    except (OSError, InputFileError, ValueError) as exc:
        print_error(str(exc))
        return 1
    return report(result, summary, csv_path, json_path)


if __name__ == "__main__":
    sys.exit(main())
