"""The missing-modality table of docs/results.md from the runs of its two comparisons.

Reads each run's ``valuation/shapley.json`` (the Dice of every modality subset under the definition it records)
and each one-modality run's ``metrics.json``, writes every row it used to ``<out>/rows.csv`` (one line per run,
subset and region) and prints the markdown tables: the 15 subsets × TC, WT, ET, mean (mean ± std over seeds)
per model, and the pre-registered goal checks per model.

    python scripts/missing_modality_table.py runs/missing_modality --out docs/raw/missing_modality --overwrite
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from brats_cggm.core.files import atomic_write_text, refuse_existing
from brats_cggm.core.shapley import all_subsets, subset_key
from brats_cggm.core.tables import csv_text, markdown_table

MODALITIES = ("flair", "t1ce", "t1", "t2")
REGIONS = ("TC", "WT", "ET", "mean")
#: model name → run folder below the comparisons' root
MODELS = {
    "joint": "reference/joint",
    "joint + modality dropout": "dropout/joint",
    "CGGM + modality dropout": "dropout/cggm",
}
SUBSETS = [subset_key(s) for s in sorted(all_subsets(MODALITIES), key=lambda s: -len(s)) if s]


def read_rows(root: Path) -> list[dict]:
    """One row per run, subset (or ``dedicated`` for a one-modality run) and region."""
    rows = []
    for model, folder in MODELS.items():
        for run in sorted((root / folder).glob("seed*")):
            report = run / "valuation" / "shapley.json"
            if not report.is_file():
                continue
            summary = json.loads(report.read_text())
            for subset, dice in summary["subset_dice"].items():
                if subset == "none":
                    continue
                for region in REGIONS:
                    rows.append(_row(model, run, root, subset, region, dice[region], summary["absent"]))
    for modality in MODALITIES:
        for run in sorted((root / "reference" / f"unimodal-{modality}").glob("seed*")):
            metrics = run / "metrics.json"
            if not metrics.is_file():
                continue
            validation = json.loads(metrics.read_text())["validation"]
            for region in REGIONS:
                dice = validation[f"val/dice/{region.lower()}"]
                rows.append(_row(f"{modality} only", run, root, modality, region, dice))
    return rows


def _row(model: str, run: Path, root: Path, subset: str, region: str, dice: float, absent: str = "dedicated") -> dict:
    return {
        "model": model,
        "seed": int(run.name.removeprefix("seed")),
        "subset": subset,
        "region": region,
        "dice": float(dice),
        "absent": absent,
        "run": str(run.relative_to(root)),
    }


def _values(rows: Sequence[dict], model: str, subset: str, region: str) -> dict[int, float]:
    return {r["seed"]: r["dice"] for r in rows if (r["model"], r["subset"], r["region"]) == (model, subset, region)}


def _cell(values: dict[int, float]) -> str:
    if not values:
        return "—"
    data = np.array(list(values.values()))
    return f"{data.mean():.3f}" if len(data) == 1 else f"{data.mean():.3f} ± {data.std(ddof=1):.3f}"


def _mean_of_subsets(rows: Sequence[dict], model: str, seed: int) -> float | None:
    per_subset = [_values(rows, model, s, "mean").get(seed) for s in SUBSETS]
    return None if any(v is None for v in per_subset) else float(np.mean(per_subset))


def subset_table(rows: Sequence[dict], model: str) -> str:
    """The 15-row table of one model (mean ± sample std over its seeds)."""
    table = []
    for subset in SUBSETS:
        seeds = sorted(_values(rows, model, subset, "mean"))
        table.append([subset, *(_cell(_values(rows, model, subset, r)) for r in REGIONS), ", ".join(map(str, seeds))])
    seeds = sorted({r["seed"] for r in rows if r["model"] == model})
    means = {seed: m for seed in seeds if (m := _mean_of_subsets(rows, model, seed)) is not None}
    table.append(["**mean of the 15**", "", "", "", _cell(means), ", ".join(map(str, sorted(means)))])
    return markdown_table(["subset", *REGIONS, "seeds"], table) + "\n"


def goal_checks(rows: Sequence[dict], model: str) -> str:
    """The pre-registered goals, per seed: the 15-subset mean, the one-modality rows, the full set against joint."""
    full = subset_key(MODALITIES)
    table = []
    for seed in sorted({r["seed"] for r in rows if r["model"] == model}):
        mean15 = _mean_of_subsets(rows, model, seed)
        gaps = []
        for m in MODALITIES:
            own, dedicated = _values(rows, model, m, "mean").get(seed), _values(rows, f"{m} only", m, "mean").get(seed)
            if own is not None and dedicated is not None:
                gaps.append((own - dedicated, m))
        worst = f"{min(gaps)[0]:+.3f} ({min(gaps)[1]})" if len(gaps) == len(MODALITIES) else "—"
        own_full, joint_full = (
            _values(rows, model, full, "mean").get(seed),
            _values(rows, "joint", full, "mean").get(seed),
        )
        versus = f"{own_full - joint_full:+.3f}" if own_full is not None and joint_full is not None else "—"
        table.append([seed, "—" if mean15 is None else f"{mean15:.3f}", worst, versus])
    header = [
        "seed",
        "mean of 15 (≥ 0.80)",
        "worst one-modality row − dedicated (≥ −0.05)",
        "full − joint's full (≥ −0.01)",
    ]
    return markdown_table(header, table) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="the folder holding reference/ and dropout/")
    parser.add_argument("--out", type=Path, required=True, help="folder for rows.csv and tables.md")
    parser.add_argument("--overwrite", action="store_true", help="replace rows.csv and tables.md")
    args = parser.parse_args(argv)
    rows = read_rows(args.root)
    if not rows:
        print(f"error: no finished run under {args.root}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    refuse_existing([args.out / "rows.csv", args.out / "tables.md"], args.overwrite, "to replace them")
    tables = []
    for model in MODELS:
        tables += [f"### {model}\n", subset_table(rows, model), goal_checks(rows, model)]
    atomic_write_text(args.out / "rows.csv", csv_text(list(rows[0]), [list(r.values()) for r in rows]))
    atomic_write_text(args.out / "tables.md", "\n".join(tables))
    print("\n".join(tables))
    return 0


if __name__ == "__main__":
    sys.exit(main())
