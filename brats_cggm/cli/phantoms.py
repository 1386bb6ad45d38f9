"""``brats-cggm-phantoms OUT_DIR``: write synthetic BraTS 2021-layout cases (:mod:`brats_cggm.brats.phantoms`).

    brats-cggm-phantoms data/brats_phantoms --n 8 --shape 48 48 48

The data set folder stays a positional argument (the one thing the command writes).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from brats_cggm.brats.phantoms import MIN_SIDE, write_phantom_dataset
from brats_cggm.cli.common import CommandParser

__all__ = ["build_parser", "main"]

PROG = "brats-cggm-phantoms"


def build_parser() -> CommandParser:
    """The arguments of ``brats-cggm-phantoms``."""
    parser = CommandParser(
        prog=PROG,
        description="Write synthetic BraTS 2021-layout cases (phantoms with unequally informative modalities).",
    )
    parser.add_argument("out_dir", help="data set folder to write the case folders into")
    parser.add_argument("--n", type=int, default=8, help="number of cases (default: 8)")
    parser.add_argument(
        "--shape", type=int, nargs=3, default=[48, 48, 48], metavar=("X", "Y", "Z"), help="volume shape"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of case 0; case i uses seed + i")
    parser.add_argument("--overwrite", action="store_true", help="replace existing case folders")
    return parser


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse and check the arguments.

    Raises:
        SystemExit: bad arguments (status 2, with argparse's usage message).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error(f"--n must be at least 1, got {args.n}")
    if min(args.shape) < MIN_SIDE:
        parser.error(f"--shape: every side must be at least {MIN_SIDE} voxels, got {args.shape}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point ``brats-cggm-phantoms``.

    Args:
        argv: arguments (without the program name); ``sys.argv[1:]`` when None.

    Returns:
        0 on success, 1 if writing failed (e.g. the cases exist), 2 for bad arguments.
    """
    try:
        args = parse_arguments(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    try:
        case_dirs = write_phantom_dataset(
            args.out_dir, n=args.n, shape=tuple(args.shape), seed=args.seed, overwrite=args.overwrite
        )
    except (OSError, ValueError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    for case_dir in case_dirs:
        print(f"wrote {case_dir}")
    print(f"{len(case_dirs)} phantom case(s) of shape {tuple(args.shape)} in {Path(args.out_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
