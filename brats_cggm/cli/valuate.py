"""``brats-cggm-valuate``: Shapley contribution of each MRI modality of a trained BraTS network.

    brats-cggm-valuate --bundle runs/brats_cggm --dataset-dir data/brats_phantoms \
        --output-dir runs/brats_cggm/valuation

``--bundle`` is a training ``output_dir`` (its ``configs/inference.json`` and ``models/model.pt``) or a
bundle folder; ``--checkpoint`` picks other weights (e.g. ``models/checkpoint.pt``). ``--absent`` says what an
absent modality is (default ``mask``: the network's availability mask; ``zero-input``: its image replaced by
zeros, the figures before 0.2); the reports record it. The valuation itself is
:func:`brats_cggm.brats.analysis.valuation.valuate_bundle`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from brats_cggm.brats.analysis.absence import ABSENCE_HELP, ABSENCE_MODES
from brats_cggm.brats.analysis.valuation import markdown_table, valuate_bundle
from brats_cggm.cli.common import CommandParser, overlap_fraction, positive_int, print_error
from brats_cggm.core.devices import resolve_device

__all__ = ["build_parser", "main"]

PROG = "brats-cggm-valuate"


def build_parser() -> CommandParser:
    """The arguments of ``brats-cggm-valuate``."""
    parser = CommandParser(
        prog=PROG,
        description="Shapley contribution of each MRI modality to the Dice (TC, WT, ET) of a trained network: "
        "the value of a subset of modalities is the Dice with the other modalities absent (all 16 subsets; "
        "--absent says what absent means).",
    )
    parser.add_argument("--bundle", required=True, help="bundle folder or training output_dir (configs + models)")
    parser.add_argument("--checkpoint", help="weights: models/model.pt (default) or a training checkpoint.pt")
    parser.add_argument("--dataset-dir", required=True, help="a BraTS-layout or MSD Task01 folder with labels")
    parser.add_argument("--output-dir", required=True, help="folder for shapley_per_case.csv, shapley.json, shapley.md")
    parser.add_argument("--overwrite", action="store_true", help="replace existing reports in --output-dir")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda or cuda:N")
    parser.add_argument("--max-cases", type=positive_int, default=None, help="valuate only the first N cases")
    parser.add_argument("--case-ids", nargs="+", default=None, help="valuate only these cases")
    parser.add_argument(
        "--roi", type=positive_int, nargs=3, default=None, help="sliding window (default: training patch)"
    )
    parser.add_argument(
        "--overlap",
        type=overlap_fraction,
        default=None,
        help="sliding-window overlap in [0, 1) (default: the bundle's)",
    )
    parser.add_argument("--sw-batch-size", type=positive_int, default=None, help="default: the bundle's sw_batch_size")
    parser.add_argument("--absent", choices=ABSENCE_MODES, default=ABSENCE_MODES[0], help=ABSENCE_HELP)
    return parser


def valuate(args: argparse.Namespace) -> dict[str, Any]:
    """Run the valuation the arguments describe and write its reports; returns the summary."""
    return valuate_bundle(
        args.bundle,
        args.dataset_dir,
        args.output_dir,
        checkpoint=args.checkpoint,
        device=resolve_device(args.device),
        max_cases=args.max_cases,
        case_ids=args.case_ids,
        roi_size=args.roi,
        overlap=args.overlap,
        sw_batch_size=args.sw_batch_size,
        overwrite=args.overwrite,
        absent=args.absent,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point ``brats-cggm-valuate``.

    Returns:
        0 on success, 1 on an error (bad file, existing reports), 2 for bad arguments.
    """
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        summary = valuate(args)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        print_error(str(exc), PROG)
        return 1
    print(f"absent = {summary['absent']}: {summary['absent_definition']}")
    print(markdown_table(summary), end="")
    print(f"reports written to {args.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
