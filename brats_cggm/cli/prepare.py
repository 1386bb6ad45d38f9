"""``brats-cggm-prepare DATASET_DIR``: build the disk cache of a data set before training.

A first training run builds the missing entries itself; building them here, ahead of time (and with
``--workers`` processes), keeps that wait out of a GPU job. ``--verify`` checks the whole cache of the data
set (every input file hashed, every entry's structure and checksums), rebuilds what is stale or damaged,
checks the result again and prints what it found.
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
    parser.add_argument(
        "--cache-verify",
        choices=["stat", "content"],
        default="stat",
        help="compare entries with their input files by stat, hashing changed files (default), or always by content "
        "(bundle: cache_verify)",
    )
    parser.add_argument(
        "--verify",
        action="store_true",
        help="check and repair the whole cache: hash every input file, check every entry's checksums, rebuild "
        "what is stale or damaged, check again; print counts; exit 1 if an entry is still invalid",
    )
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


def _prepare(args: argparse.Namespace, reports: dict) -> dict:
    from brats_cggm.brats.data.cache.prepare import prepare_cache

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
        cache_verify="content" if args.verify else args.cache_verify,
        reports=reports,
    )


def _summarise(result: dict) -> None:
    print(
        f"{len(result['train'])} training and {len(result['val'])} validation case(s) cached in {result['cache_dir']}"
    )


def _summarise_verification(result: dict, reports: dict) -> list[tuple[str, str]]:
    """Print what ``--verify`` found per kind; return the entries still invalid after the repair."""
    from brats_cggm.brats.data.cache.prepare import recheck_entries

    for kind in ("train", "val"):
        report = reports[kind]
        print(
            f"{kind}: {len(result[kind])} entries: {report.valid} valid, {len(report.rebuilt)} rebuilt, "
            f"{len(report.built)} built (absent)"
        )
        for case_id, reason in report.rebuilt:
            print(f"  rebuilt {case_id}: {reason}")
    return recheck_entries(result["train"] + result["val"])


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``brats-cggm-prepare``: parse, build the cache, summarise.

    Args:
        argv: arguments (without the program name); ``sys.argv[1:]`` when None.

    Returns:
        0 on success, 1 for a bad data set or file, a cache entry that cannot be written, or (``--verify``) an
        entry still invalid after repair (named on stderr), 2 for bad arguments.
    """
    args = _parse(argv)
    if isinstance(args, int):
        return args
    reports: dict = {}
    try:
        result = _prepare(args, reports)
        invalid = _summarise_verification(result, reports) if args.verify else []
    except (OSError, ValueError) as exc:
        print(f"{_PROGRAM}: error: {exc}", file=sys.stderr)
        return 1
    if invalid:
        for entry, cause in invalid:
            print(f"{_PROGRAM}: error: cache entry {entry}: {cause} (still invalid after repair)", file=sys.stderr)
        return 1
    _summarise(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
