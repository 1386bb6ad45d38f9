"""Cold-start selection evidence: select K cases of a phantom pool, train on them only, score on held-out cases.

    python scripts/select_and_train.py --work-dir runs/select_and_train \\
        --budgets 2 4 8 --strategies mmcsal random kmeans typiclust probcover --seeds 0 1 2 --init none pretrained

For each seed the per-modality encoders are pre-trained once on the pool (MMCSAL stage 1, docs/methods.md §8)
and the pool is embedded; each strategy then chooses K cases from those embeddings; the default training bundle
trains on the chosen cases only (from a random initialisation, ``none``, or from the pre-trained encoders,
``pretrained``, through ``init_encoders``) and validates, at its last epoch, on the held-out cases: that
``val/dice/mean`` is the result. Every finished run is written to ``WORK/results/<run>.json`` at once and
skipped when the script is started again (resumable); ``WORK/table.md`` is rewritten after each run with Dice
mean ± std over seeds per strategy, budget and initialisation.

A study over the library, not a command: the embeddings and strategies are those of ``brats-cggm-select``
(:mod:`brats_cggm.selection`), each training run is :func:`brats_cggm.experiments.runs.train_run`. It imports the
installed package (``pip install -e .``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from brats_cggm.brats.data.discovery import discover_dataset
from brats_cggm.brats.encoder_weights import save_encoder_weights
from brats_cggm.core.files import atomic_write_text, write_json
from brats_cggm.core.resources import bundle_config
from brats_cggm.core.safe_load import load_tensors
from brats_cggm.experiments.runs import train_run
from brats_cggm.selection.embeddings import case_embeddings, load_pool_volumes
from brats_cggm.selection.losses import modality_gap
from brats_cggm.selection.pretraining import PretrainingConfig, pretrain_encoders
from brats_cggm.selection.strategies import select


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", default="runs/select_and_train")
    parser.add_argument("--pool-size", type=int, default=24)
    parser.add_argument("--heldout-size", type=int, default=8)
    parser.add_argument("--spacing", type=float, default=3.0, help="phantom voxel size and training pixdim (mm)")
    parser.add_argument("--budgets", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--strategies", nargs="+", default=["mmcsal", "random", "kmeans", "typiclust", "probcover"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--init", nargs="+", default=["none", "pretrained"], choices=["none", "pretrained"])
    parser.add_argument("--pretrain-steps", type=int, default=200)
    parser.add_argument("--max-epochs", type=int, default=40)
    parser.add_argument("--device", default="cpu")
    return parser.parse_args()


def write_phantoms(work: Path, args: argparse.Namespace) -> tuple[Path, Path]:
    """The pool (seeds 0..) and the held-out cases (seeds 1000..), written once."""
    from brats_cggm.brats.phantoms.anatomical import write_anatomical_phantom_dataset

    pool, heldout = work / "pool", work / "heldout"
    if not pool.is_dir():
        write_anatomical_phantom_dataset(pool, n=args.pool_size, seed=0, spacing=args.spacing)
    if not heldout.is_dir():
        write_anatomical_phantom_dataset(heldout, n=args.heldout_size, seed=1000, spacing=args.spacing)
    return pool, heldout


def pretrained(work: Path, pool: Path, seed: int, args: argparse.Namespace) -> tuple[list[str], torch.Tensor, Path]:
    """Per seed: the encoders file and the pool's embeddings (cached in WORK/pretrained_s<seed>)."""
    folder = work / f"pretrained_s{seed}"
    encoders, embeddings, meta = folder / "encoders.pt", folder / "embeddings.pt", folder / "pretraining.json"
    if not meta.is_file():
        spec = discover_dataset(pool, require_label=False)
        volumes = load_pool_volumes(spec)
        start = time.time()
        result = pretrain_encoders(
            volumes, spec.modalities, PretrainingConfig(steps=args.pretrain_steps), seed=seed, device=args.device
        )
        emb = case_embeddings(volumes, result.network, result.heads, 32, device=args.device)
        folder.mkdir(parents=True, exist_ok=True)
        save_encoder_weights(encoders, result.network, overwrite=True)
        torch.save(emb, embeddings)
        write_json(
            meta,
            {
                "case_ids": [item["case_id"] for item in spec.items],
                "modality_gap": modality_gap(list(emb.unbind(1))),
                "first": result.history[0],
                "last": result.history[-1],
                "seconds": time.time() - start,
            },
        )
    record = json.loads(meta.read_text())
    return record["case_ids"], load_tensors(embeddings), encoders


def train(run_dir: Path, cases: list[str], pool: Path, heldout: Path, seed: int, encoders: Path | None, args) -> dict:
    """The default bundle on the chosen cases only (:func:`~brats_cggm.experiments.runs.train_run`); validation =
    the held-out cases."""
    data = run_dir / "data"
    data.mkdir(parents=True, exist_ok=True)
    for case in cases:
        link = data / case
        if not link.exists():
            link.symlink_to((pool / case).resolve())
    split = (
        f"$[@dataset.items, discover_dataset('{heldout.resolve()}', @modalities, "
        "label_convention=@label_convention, patterns=@patterns).items]"
    )
    overrides: dict[str, Any] = {
        "dataset_dir": str(data),
        "overwrite": True,
        "max_epochs": args.max_epochs,
        "val_interval": args.max_epochs,
        "seed": seed,
        "device": args.device,
        "data_options#pixdim": [args.spacing] * 3,
        "split": split,
    }
    if encoders is not None:
        overrides["init_encoders"] = str(encoders)
    start = time.time()
    metrics = train_run([bundle_config()], run_dir / "out", overrides, log_file=run_dir / "train.log")
    return {"dice": metrics["validation"]["val/dice/mean"], "metrics": metrics, "train_seconds": time.time() - start}


def table(results: list[dict]) -> str:
    """Markdown: Dice mean ± std over seeds per strategy, budget and initialisation, and the difference from random
    selection paired by seed (same budget, initialisation and training seed: the training seed moves the Dice more
    than the strategy, so unpaired spreads hide what pairing shows)."""
    groups: dict[tuple, dict[int, float]] = {}
    for r in results:
        groups.setdefault((r["strategy"], r["budget"], r["init"]), {})[r["seed"]] = r["dice"]
    lines = [
        "| strategy | K | init | runs | held-out Dice (mean ± std) | − random, paired by seed (mean ± std, n) |",
        "|---|---|---|---|---|---|",
    ]
    for (strategy, budget, init), by_seed in sorted(groups.items(), key=lambda t: (t[0][1], t[0][2], t[0][0])):
        values = list(by_seed.values())
        random = groups.get(("random", budget, init), {})
        paired = [by_seed[s] - random[s] for s in by_seed if s in random]
        cells = [strategy, str(budget), init, str(len(values)), _mean_std(values)]
        cells.append("—" if strategy == "random" or not paired else f"{_mean_std(paired, signed=True)}, {len(paired)}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _mean_std(values: list[float], signed: bool = False) -> str:
    std = float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
    return f"{np.mean(values):{'+' if signed else ''}.3f} ± {std:.3f}"


def main() -> int:
    args = parse_arguments()
    work = Path(args.work_dir)
    pool, heldout = write_phantoms(work, args)
    results_dir = work / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        case_ids, embeddings, encoders = pretrained(work, pool, seed, args)
        for budget in args.budgets:
            for strategy in args.strategies:
                chosen = select(strategy, embeddings, budget, seed)
                cases = [case_ids[i] for i in chosen.indices]
                for init in args.init:
                    name = f"{strategy}_K{budget}_s{seed}_{init}"
                    target = results_dir / f"{name}.json"
                    if target.is_file():
                        continue
                    print(f"{name}: {cases}", flush=True)
                    outcome = train(
                        work / "runs" / name,
                        cases,
                        pool,
                        heldout,
                        seed,
                        encoders if init == "pretrained" else None,
                        args,
                    )
                    record = {"strategy": strategy, "budget": budget, "seed": seed, "init": init, "cases": cases}
                    write_json(target, {**record, "scores": chosen.scores, "details": chosen.details, **outcome})
                    print(f"{name}: held-out Dice {outcome['dice']:.4f}", flush=True)
                    finished = [json.loads(p.read_text()) for p in sorted(results_dir.glob("*.json"))]
                    atomic_write_text(work / "table.md", table(finished))
    return 0


if __name__ == "__main__":
    sys.exit(main())
