"""``brats-cggm-phantoms OUT_DIR``: write synthetic BraTS 2021-layout cases.

    brats-cggm-phantoms data/brats_phantoms --n 8 --shape 48 48 48
    brats-cggm-phantoms data/anatomical --anatomy mni152 --n 20 --spacing 2
    brats-cggm-phantoms data/mismatch --anatomy mni152 --variant t2-flair-mismatch --n 20 --spacing 4

``--anatomy geometric`` (the default) writes the geometric phantoms of :mod:`brats_cggm.brats.phantoms.geometric`
(``--shape``); ``--anatomy mni152`` the phantoms on real anatomy of :mod:`brats_cggm.brats.phantoms.anatomical`
(``--spacing``: the BraTS 240 x 240 x 155 mm field of view sampled at that voxel size; ``--variant``: one of
:data:`~brats_cggm.brats.phantoms.anatomical.VARIANTS`, e.g. the positive control ``t2-flair-mismatch``). The data
set folder stays
a positional argument (the one thing the command writes).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from brats_cggm.brats.phantoms.anatomical import VARIANTS
from brats_cggm.brats.phantoms.geometric import MIN_SIDE, write_phantom_dataset
from brats_cggm.cli.common import CommandParser

__all__ = ["ANATOMIES", "build_parser", "main"]

PROG = "brats-cggm-phantoms"
#: ``geometric``: perturbed ellipsoids (``--shape``); ``mni152``: the MNI152 2009 anatomy (``--spacing``).
ANATOMIES = ("geometric", "mni152")
DEFAULT_SHAPE = (48, 48, 48)


def build_parser() -> CommandParser:
    """The arguments of ``brats-cggm-phantoms``."""
    parser = CommandParser(
        prog=PROG,
        description="Write synthetic BraTS 2021-layout cases (phantoms with unequally informative modalities).",
    )
    parser.add_argument("out_dir", help="data set folder to write the case folders into")
    parser.add_argument("--n", type=int, default=8, help="number of cases (default: 8)")
    parser.add_argument("--anatomy", choices=ANATOMIES, default="geometric", help="phantom kind (default: %(default)s)")
    parser.add_argument(
        "--shape",
        type=int,
        nargs=3,
        default=None,
        metavar=("X", "Y", "Z"),
        help="volume shape of geometric phantoms (default: 48 48 48)",
    )
    parser.add_argument(
        "--spacing",
        type=float,
        nargs="+",
        default=None,
        metavar="MM",
        help="voxel size of mni152 phantoms in mm, one number or three, 1 to 8 (default: 1, the BraTS grid)",
    )
    parser.add_argument(
        "--variant",
        choices=VARIANTS,
        default=None,
        help="mni152 phantom variant (default: default; t2-flair-mismatch: the positive control of docs/phantoms.md)",
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
    if args.anatomy == "geometric":
        if args.spacing is not None:
            parser.error("--spacing is for --anatomy mni152; geometric phantoms take --shape")
        if args.variant is not None:
            parser.error("--variant is for --anatomy mni152")
        args.shape = list(DEFAULT_SHAPE) if args.shape is None else args.shape
        if min(args.shape) < MIN_SIDE:
            parser.error(f"--shape: every side must be at least {MIN_SIDE} voxels, got {args.shape}")
    else:
        if args.shape is not None:
            parser.error("--shape is for --anatomy geometric; mni152 phantoms take --spacing")
        spacing = [1.0] if args.spacing is None else args.spacing
        if len(spacing) not in (1, 3) or not all(1.0 <= s <= 8.0 for s in spacing):
            parser.error(f"--spacing: one or three voxel sizes between 1 and 8 mm, got {spacing}")
        args.spacing = spacing[0] if len(spacing) == 1 else tuple(spacing)
        args.variant = "default" if args.variant is None else args.variant
    return args


def _write(args: argparse.Namespace) -> tuple[list[Path], str]:
    """Write the cases; returns their folders and a description of their grid."""
    if args.anatomy == "geometric":
        case_dirs = write_phantom_dataset(
            args.out_dir, n=args.n, shape=tuple(args.shape), seed=args.seed, overwrite=args.overwrite
        )
        return case_dirs, f"of shape {tuple(args.shape)}"
    from brats_cggm.brats.phantoms.anatomical import brats_grid_shape, write_anatomical_phantom_dataset

    case_dirs = write_anatomical_phantom_dataset(
        args.out_dir, n=args.n, seed=args.seed, spacing=args.spacing, overwrite=args.overwrite, variant=args.variant
    )
    variant = "" if args.variant == "default" else f", variant {args.variant}"
    return case_dirs, f"on MNI152 anatomy, shape {brats_grid_shape(args.spacing)} at {args.spacing} mm{variant}"


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point ``brats-cggm-phantoms``.

    Args:
        argv: arguments (without the program name); ``sys.argv[1:]`` when None.

    Returns:
        0 on success, 1 if writing failed (e.g. the cases exist, or nilearn is missing), 2 for bad arguments.
    """
    try:
        args = parse_arguments(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    try:
        case_dirs, grid = _write(args)
    except (OSError, ValueError, ImportError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    for case_dir in case_dirs:
        print(f"wrote {case_dir}")
    print(f"{len(case_dirs)} phantom case(s) {grid} in {Path(args.out_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
