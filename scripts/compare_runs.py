"""Joint training against CGGM on the phantom set: same budget, several seeds, one table.

    python scripts/compare_runs.py --out runs/compare --seeds 0 1 2

Extra ``--override key=value`` pairs go to every run (e.g. ``max_epochs=60``, ``dataset_dir=/data/brats``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from brats_cggm.comparison import markdown_table, run_comparison, summarize, write_csv

REPO = Path(__file__).resolve().parents[1]
REGIONS = ["val/dice/tc", "val/dice/wt", "val/dice/et", "val/dice/mean"]
MODALITIES = ["flair", "t1ce", "t1", "t2"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/compare"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=["joint", "cggm"])
    parser.add_argument("--jobs", type=int, default=1, help="runs at the same time (step times then not comparable)")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    overrides = {}
    for item in args.override:
        key, _, value = item.partition("=")
        overrides[key] = value
    overlays = {m: REPO / "configs" / "balancers" / f"{m}.yaml" for m in args.methods}
    bundle = REPO / "bundles/brats_cggm/configs/train.yaml"
    rows = run_comparison(bundle, overlays, args.seeds, args.out, overrides, args.jobs)
    summary = summarize(rows)
    aux_columns = [f"val/modality_dice/{m}" for m in MODALITIES]
    table = markdown_table(summary, REGIONS) + "\nAuxiliary heads (per-modality Dice, whole volumes):\n\n"
    table += markdown_table(summary, aux_columns)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.md").write_text(table)
    (args.out / "rows.json").write_text(json.dumps(rows, indent=2))
    write_csv(rows, args.out / "runs.csv")
    print(table)


if __name__ == "__main__":
    main()
