#!/usr/bin/env python
"""Every balancing method on one task, same seeds and budget: Dice, auxiliary Dice, Shapley values, step time.

    python scripts/compare_balancers.py --out runs/compare_balancers --seeds 0 1 --max_epochs 20

Runs the BraTS bundle (phantoms by default) once per method overlay (``configs/balancers/<m>.yaml``) and
seed through :mod:`brats_cggm.comparison` (one ``monai.bundle run`` process each; its ``metrics.json``
holds the validation Dice and the mean training step time), then valuates each run's final network with
:func:`brats_cggm.brats.valuation.valuate_bundle` on that run's validation cases (Shapley contribution of
each modality to the mean Dice). Writes ``summary.md`` (markdown tables, mean ± std over seeds),
``runs.csv`` (one line per run) and ``rows.json``.

Budget: ``--max_epochs`` for every method; validation once, at the end (``val_interval = max_epochs``).
Epoch-based schedules of the papers are scaled to the budget unless ``--paper_schedules``: OPM's
warm-up becomes ``max(1, max_epochs // 10)`` epochs (paper: 5 of ~50) and Re-learning diagnoses at
``max_epochs // 3`` and ``2·max_epochs // 3`` (paper: every 15–20 epochs, 2–3 times). The table says so.
``--override key=value`` goes to every run (e.g. ``dataset_dir=/data/BraTS2021``, ``network_preset=full``).
``--smoke`` shrinks everything (6 phantoms of 32³, 16³ patches, a tiny network) to check the pipeline in
a minute on a CPU; its numbers mean nothing. Existing reports in ``--out`` are kept unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from brats_cggm.comparison import markdown_table, run_comparison, summarize, write_csv

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "brats_cggm"
METHODS = ["joint", "cggm", "ogm_ge", "opm", "inforeg", "relearning", "mmpareto", "dropout"]
MODALITIES = ["flair", "t1ce", "t1", "t2"]
REGIONS = ["val/dice/tc", "val/dice/wt", "val/dice/et", "val/dice/mean"]
REPORTS = ("summary.md", "runs.csv", "rows.json")
#: ``--smoke``: a pipeline check on tiny phantoms (overrides of the BraTS bundle).
SMOKE = {
    "phantoms": {"n": 6, "shape": [32, 32, 32], "seed": 0},
    "patch_size": [16, 16, 16],
    "network_def#features": [4, 8, 16],
    "num_samples": 1,
    "sw_batch_size": 8,
    "sw_overlap": 0.0,
    "val_fraction": 0.34,
}


def schedule_overrides(method: str, max_epochs: int) -> dict[str, Any]:
    """Epoch-based parameters of ``method`` scaled to a ``max_epochs`` budget (see the module docstring)."""
    if method == "opm":
        return {"balancer#warmup_epochs": max(1, max_epochs // 10)}
    if method == "relearning":
        return {"balancer#reinit_epoch": max(1, max_epochs // 3), "balancer#reinit_num": 2}
    return {}


def _split_val_ids(dataset_dir: str, seed: int, val_fraction: float) -> list[str]:
    from brats_cggm.brats.data import discover_dataset, split_datalist

    spec = discover_dataset(dataset_dir, MODALITIES, validate="none")
    return [str(item["case_id"]) for item in split_datalist(spec.items, val_fraction=val_fraction, seed=seed)[1]]


def shapley_of_run(run_dir: Path, dataset_dir: str, seed: int, val_fraction: float, device: str) -> dict[str, float]:
    """``shapley/<modality>``: mean Shapley contribution to the mean Dice over the run's validation cases.

    The run's ``output_dir`` is the bundle (its ``configs/inference.json``); the weights are its
    ``models/model.pt`` (validation runs once, at the end, so that is the final network).
    """
    from brats_cggm.brats.valuation import valuate_bundle

    checkpoint = run_dir / "models" / "model.pt"
    if not checkpoint.is_file():
        checkpoint = run_dir / "models" / "checkpoint.pt"
    summary = valuate_bundle(
        run_dir,
        dataset_dir,
        run_dir / "valuation",
        checkpoint=checkpoint,
        device=device,
        case_ids=_split_val_ids(dataset_dir, seed, val_fraction),
        overwrite=True,  # the run was just trained into this folder
    )
    return {f"shapley/{m}": summary["shapley"][m]["mean"] for m in summary["modalities"]}


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/compare_balancers"))
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--max_epochs", type=int, default=20)
    parser.add_argument("--device", default=None, help="training and valuation device (default: the bundle's)")
    parser.add_argument("--paper_schedules", action="store_true", help="keep the overlays' epoch schedules")
    parser.add_argument("--no_shapley", action="store_true", help="skip the modality valuation")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--smoke", action="store_true", help="tiny phantoms and network: a pipeline check only")
    parser.add_argument("--overwrite", action="store_true", help="replace the reports and runs in --out")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.max_epochs < 1:
        parser.error("--max_epochs must be at least 1")
    existing = [args.out / name for name in REPORTS if (args.out / name).exists()]
    existing += [args.out / m for m in args.methods if (args.out / m).exists()]
    if existing and not args.overwrite:
        print(f"compare_balancers: error: {existing[0]} exists; pass --overwrite or another --out", file=sys.stderr)
        return 1

    overrides: dict[str, Any] = {"max_epochs": args.max_epochs, "val_interval": args.max_epochs}
    if args.smoke:
        overrides.update(SMOKE)
        overrides["phantom_dir"] = str(args.out / "phantoms")
    if args.device:
        overrides["device"] = f"$torch.device('{args.device}')"
    for item in args.override:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--override {item!r}: expected KEY=VALUE")
        overrides[key] = value
    # where the runs read (or generate) their data; the bundle's defaults otherwise
    dataset_dir = str(overrides.get("dataset_dir", overrides.get("phantom_dir", "./data/brats_phantoms")))
    val_fraction = float(overrides.get("val_fraction", 0.2))
    import torch

    device = args.device or ("cuda:0" if torch.cuda.is_available() else "cpu")

    rows: list[dict[str, Any]] = []
    for method in args.methods:
        extra = {} if args.paper_schedules else schedule_overrides(method, args.max_epochs)
        overlay = {method: REPO / "configs" / "balancers" / f"{method}.yaml"}
        method_rows = run_comparison(
            BUNDLE / "configs" / "train.yaml", overlay, args.seeds, args.out, {**overrides, **extra}
        )
        for row in method_rows:
            if not args.no_shapley:
                run_dir = args.out / method / f"seed{row['seed']}"
                row["validation"] = {
                    **row["validation"],
                    **shapley_of_run(run_dir, dataset_dir, row["seed"], val_fraction, device),
                }
            row["schedule_overrides"] = extra
            print(f"{method} seed {row['seed']}: mean Dice {row['validation'].get('val/dice/mean', float('nan')):.3f}")
        rows += method_rows

    summary = summarize(rows)
    text = [
        f"{len(args.seeds)} seed(s) {args.seeds}, {args.max_epochs} epochs each, data {dataset_dir}"
        f"{' (--smoke: tiny pipeline check, numbers meaningless)' if args.smoke else ''}; mean ± std over seeds; "
        "validation Dice on whole volumes; step time = mean training iteration time relative to joint "
        "(forward, backward, optimizer steps; epoch-end work such as Re-learning's diagnosis is not in it).\n",
        markdown_table(summary, REGIONS),
        "\nAuxiliary heads (per-modality Dice on the validation volumes):\n",
        markdown_table(summary, [f"val/modality_dice/{m}" for m in MODALITIES]),
    ]
    if not args.no_shapley:
        text += [
            "\nShapley contribution of each modality to the mean Dice (validation cases, inputs of absent "
            "modalities zeroed):\n",
            markdown_table(summary, [f"shapley/{m}" for m in MODALITIES]),
        ]
    scaled = {m: schedule_overrides(m, args.max_epochs) for m in args.methods}
    scaled = {m: v for m, v in scaled.items() if v}
    if scaled and not args.paper_schedules:
        text.append(f"\nSchedules scaled to the budget: {json.dumps(scaled)}\n")
    table = "\n".join(text)
    args.out.mkdir(parents=True, exist_ok=True)
    _atomic_write(args.out / "summary.md", table)
    _atomic_write(args.out / "rows.json", json.dumps(rows, indent=2, default=str))
    partial = args.out / ".runs.csv.tmp"
    os.replace(write_csv(rows, partial), args.out / "runs.csv")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
