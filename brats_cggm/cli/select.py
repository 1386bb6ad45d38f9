"""``brats-cggm-select``: choose which unlabelled cases to annotate first (cold-start selection, docs/methods.md §8).

    brats-cggm-select --pool data/unlabelled --budget 20 --strategy mmcsal --out runs/select/first20.csv \\
        --encoders-out runs/select/encoders.pt

Writes the chosen case ids with their scores to ``--out`` (CSV) and beside it with the suffix ``.json``
(the settings, the scores, the modality gap of the embeddings). Pre-trains the per-modality encoders on the pool
first (not for ``random`` unless ``--encoders-out`` asks for them); the encoders file initialises training
through the bundle key ``init_encoders``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from brats_cggm.cli.common import CommandParser, finite_float, non_negative_float, positive_int, print_error
from brats_cggm.core.files import refuse_existing

__all__ = ["build_parser", "main", "read_exclusions"]

PROG = "brats-cggm-select"
STRATEGY_NAMES = ("mmcsal", "random", "kmeans", "typiclust", "probcover")


def build_parser() -> CommandParser:
    """The arguments of ``brats-cggm-select``."""
    parser = CommandParser(prog=PROG, description="Choose which unlabelled cases to annotate first.")
    parser.add_argument("--pool", required=True, help="data set folder of the unlabelled cases (BraTS or MSD layout)")
    parser.add_argument("--budget", required=True, type=int, help="number of cases to choose")
    parser.add_argument("--strategy", required=True, choices=STRATEGY_NAMES)
    parser.add_argument("--out", required=True, help="CSV file of the chosen cases; the JSON goes beside it")
    parser.add_argument("--seed", type=int, default=0, help="seed of pre-training and selection (default 0)")
    parser.add_argument(
        "--exclude", nargs="+", default=[], help="cases already labelled: case ids, or files with one id per line"
    )
    parser.add_argument("--encoders-out", help="save the pre-trained encoders here (for init_encoders)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--modalities", nargs="+", default=["flair", "t1ce", "t1", "t2"])
    parser.add_argument("--pixdim", type=finite_float, nargs=3, help="resample to this spacing (mm) first")
    parser.add_argument("--preset", default="cpu", help="network preset of the encoders (default cpu)")
    parser.add_argument("--steps", type=int, default=200, help="pre-training steps (default 200)")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="cases per pre-training step")
    parser.add_argument("--patch-size", type=positive_int, default=32, help="side of the patches (voxels)")
    parser.add_argument("--prototype-weight", type=non_negative_float, default=1.0, help="w_proto; 0: no prototypes")
    parser.add_argument("--lambda-align", type=non_negative_float, default=0.5, help="MMCSAL's alignment weight")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse and check the arguments.

    Raises:
        SystemExit: bad arguments (status 2, with argparse's usage message).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.budget < 1:
        parser.error(f"--budget must be at least 1, got {args.budget}")
    if args.steps < 0:
        parser.error(f"--steps must be >= 0, got {args.steps}")
    return args


def read_exclusions(values: Sequence[str]) -> list[str]:
    """Case ids from ``--exclude``: each value is a file with one id per line (blank lines and ``#`` skipped)
    or, when no such file exists, an id."""
    ids: list[str] = []
    for value in values:
        path = Path(value)
        if path.is_file():
            lines = path.read_text(encoding="utf-8").splitlines()
            ids += [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
        else:
            ids.append(value)
    return ids


def output_paths(args: argparse.Namespace) -> list[Path]:
    """The files the command writes: the CSV, the JSON and, if asked, the encoders."""
    csv_path = Path(args.out)
    paths = [csv_path, csv_path.with_suffix(".json")]
    return paths + ([Path(args.encoders_out)] if args.encoders_out else [])


def check_outputs(paths: Sequence[Path], overwrite: bool) -> None:
    """Refuse existing outputs without ``--overwrite``, before any work.

    Raises:
        FileExistsError: naming the first existing file.
    """
    refuse_existing(paths, overwrite)


def discover_pool(args: argparse.Namespace) -> tuple[Any, list[dict], list[str]]:
    """The pool's cases (training's data set checks, labels not required) less the excluded ones.

    Raises:
        ValueError: unknown ids in ``--exclude`` (named), or a budget larger than what is left.
    """
    from brats_cggm.brats.data.discovery import discover_dataset
    from brats_cggm.selection.strategies import check_budget

    spec = discover_dataset(args.pool, args.modalities, require_label=False)
    excluded = read_exclusions(args.exclude)
    known = {item["case_id"] for item in spec.items}
    unknown = sorted(set(excluded) - known)
    if unknown:
        raise ValueError(f"--exclude names cases that are not in {args.pool}: {', '.join(unknown)}.")
    items = [item for item in spec.items if item["case_id"] not in set(excluded)]
    try:
        check_budget(args.budget, len(items))
    except ValueError as exc:
        raise ValueError(f"{exc} ({len(spec.items)} in {args.pool}, {len(set(excluded))} excluded)") from None
    return spec, items, sorted(set(excluded))


def pretrain(args: argparse.Namespace, volumes: list, modalities: Sequence[str]) -> Any:
    """Stage 1 pre-training with a tqdm progress bar."""
    from tqdm import tqdm

    from brats_cggm.core.devices import resolve_device
    from brats_cggm.selection.pretraining import PretrainingConfig, pretrain_encoders

    config = PretrainingConfig(
        preset=args.preset,
        patch_size=args.patch_size,
        steps=args.steps,
        batch_size=max(2, min(args.batch_size, len(volumes))),
        prototype_weight=args.prototype_weight,
    )
    with tqdm(total=args.steps, desc="pre-training", disable=args.quiet, file=sys.stderr) as bar:

        def progress(step: int, record: dict) -> None:
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.3f}")

        result = pretrain_encoders(
            volumes, modalities, config, seed=args.seed, device=resolve_device(args.device), progress=progress
        )
    return result, config


def write_outputs(args: argparse.Namespace, items: list[dict], selection: Any, record: dict) -> None:
    """The CSV (rank, case_id, score) and the JSON, each written atomically."""
    from brats_cggm.core.files import atomic_write_text, write_json

    rows = ["rank,case_id,score"]
    chosen = []
    for rank, (index, score) in enumerate(zip(selection.indices, selection.scores), start=1):
        case_id = items[index]["case_id"]
        rows.append(f"{rank},{case_id},{score:.6g}")
        chosen.append({"rank": rank, "case_id": case_id, "score": score})
    paths = output_paths(args)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(paths[0], "\n".join(rows) + "\n")
    write_json(paths[1], {**record, "selected": chosen, "details": selection.details})


def run(args: argparse.Namespace) -> Any:
    """The command's steps: outputs checked, pool found, pre-training, embeddings, selection, files written."""
    from brats_cggm.brats.encoder_weights import save_encoder_weights
    from brats_cggm.selection.embeddings import case_embeddings, load_pool_volumes
    from brats_cggm.selection.losses import modality_gap
    from brats_cggm.selection.strategies import select, select_random

    check_outputs(output_paths(args), args.overwrite)
    spec, items, excluded = discover_pool(args)
    record: dict[str, Any] = {
        "strategy": args.strategy,
        "budget": args.budget,
        "seed": args.seed,
        "pool": str(args.pool),
        "pool_size": len(spec.items),
        "excluded": excluded,
        "candidates": len(items),
    }
    embeddings = None
    if args.strategy != "random" or args.encoders_out:
        # embeddings and encoders come from the whole pool: labelled cases still inform the representation
        volumes = load_pool_volumes(spec, args.pixdim)
        result, config = pretrain(args, volumes, spec.modalities)
        all_embeddings = case_embeddings(volumes, result.network, result.heads, config.patch_size)
        keep = [i for i, item in enumerate(spec.items) if item["case_id"] not in set(excluded)]
        embeddings = all_embeddings[keep]
        record["modality_gap"] = modality_gap(list(all_embeddings.unbind(1)))
        record["pretraining"] = {**vars(config), "final": result.history[-1] if result.history else None}
        if args.encoders_out:
            save_encoder_weights(args.encoders_out, result.network, overwrite=args.overwrite)
    if args.strategy == "random":
        selection = select_random(len(items), args.budget, args.seed)
    else:
        options = {"lambda_align": args.lambda_align} if args.strategy == "mmcsal" else {}
        if embeddings is None:  # never: every strategy but random computes them above
            raise ValueError(f"{args.strategy} needs the case embeddings")
        selection = select(args.strategy, embeddings, args.budget, args.seed, **options)
    write_outputs(args, items, selection, record)
    return [items[i]["case_id"] for i in selection.indices]


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point ``brats-cggm-select``.

    Args:
        argv: arguments (without the program name); ``sys.argv[1:]`` when None.

    Returns:
        0 on success, 1 on an error (bad pool, budget, exclusions, existing outputs), 2 for bad arguments.
    """
    try:
        args = parse_arguments(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    try:
        chosen = run(args)
    except (OSError, ValueError, KeyError, RuntimeError, ImportError) as exc:
        print_error(str(exc), PROG)
        return 1
    for case_id in chosen:
        print(case_id)
    return 0


if __name__ == "__main__":
    sys.exit(main())
