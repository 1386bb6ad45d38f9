"""``brats-cggm-prepare DATASET_DIR``: build the disk cache of a data set before training.

A first training run builds the missing entries itself; building them here, ahead of time (and with
``--workers`` processes), keeps that wait out of a GPU job.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]

_PROGRAM = "brats-cggm-prepare"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_PROGRAM,
        description="Build the memory-mapped disk cache of a BraTS data set, with the training bundle's settings "
        "(bundles/brats_cggm/configs/train.yaml: cache: disk). Use the same settings as the run.",
    )
    parser.add_argument("dataset_dir", help="the data set folder (BraTS case folders, or MSD Task01 layout)")
    parser.add_argument(
        "--cache-dir", default=None, help="cache root (default: $BRATS_CGGM_CACHE or ~/.cache/brats_cggm)"
    )
    parser.add_argument("--modalities", nargs="+", default=["flair", "t1ce", "t1", "t2"], help="in channel order")
    parser.add_argument(
        "--patch-size", nargs=3, type=int, default=[32, 32, 32], help="training patch (bundle: patch_size)"
    )
    parser.add_argument("--val-fraction", type=float, default=0.2, help="validation fraction (bundle: val_fraction)")
    parser.add_argument("--seed", type=int, default=0, help="split seed (bundle: seed)")
    parser.add_argument("--pixdim", nargs=3, type=float, default=[1.0, 1.0, 1.0], help="spacing in mm")
    parser.add_argument("--patterns", default=None, help="file name preset: brats2021 or brats2023 (default: detect)")
    parser.add_argument("--label-convention", default=None, help="label convention (default: from the file names)")
    parser.add_argument("--workers", type=int, default=1, help="processes building entries")
    return parser


def _parse(argv: Sequence[str] | None) -> argparse.Namespace | int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
        if args.workers < 1:
            parser.error(f"--workers must be at least 1, got {args.workers}")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    return args


def _prepare(args: argparse.Namespace) -> dict:
    from brats_cggm.brats.cache.prepare import prepare_cache

    return prepare_cache(
        args.dataset_dir,
        cache_dir=args.cache_dir,
        modalities=args.modalities,
        patch_size=args.patch_size,
        val_fraction=args.val_fraction,
        seed=args.seed,
        pixdim=args.pixdim,
        patterns=args.patterns,
        label_convention=args.label_convention,
        num_workers=args.workers,
    )


def _summarise(result: dict) -> None:
    print(
        f"{len(result['train'])} training and {len(result['val'])} validation case(s) cached in {result['cache_dir']}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``brats-cggm-prepare``: parse, build the cache, summarise.

    Args:
        argv: arguments (without the program name); ``sys.argv[1:]`` when None.

    Returns:
        0 on success, 1 for a bad data set or file (named on stderr), 2 for bad arguments.
    """
    args = _parse(argv)
    if isinstance(args, int):
        return args
    try:
        result = _prepare(args)
    except (OSError, ValueError) as exc:
        print(f"{_PROGRAM}: error: {exc}", file=sys.stderr)
        return 1
    _summarise(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
