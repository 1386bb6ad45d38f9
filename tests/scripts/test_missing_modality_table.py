"""scripts/missing_modality_table.py on fake run folders, through its command line."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

from brats_cggm.core.shapley import all_subsets, subset_key

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "missing_modality_table.py"
MODALITIES = ("flair", "t1ce", "t1", "t2")


def _valuation(run: Path, dice_of) -> None:
    subsets = {subset_key(s): s for s in all_subsets(MODALITIES)}
    report = {
        "absent": "mask",
        "subset_dice": {key: dict.fromkeys(("TC", "WT", "ET", "mean"), dice_of(s)) for key, s in subsets.items()},
    }
    (run / "valuation").mkdir(parents=True)
    (run / "valuation" / "shapley.json").write_text(json.dumps(report))


def test_tables_and_goal_checks_from_the_runs(tmp_path: Path):
    root = tmp_path / "runs"
    for seed in (0, 1):
        _valuation(root / "reference/joint" / f"seed{seed}", lambda s: 0.9 if len(s) == 4 else 0.5)
        # every subset at 0.85 except the full set (0.895) and t1 alone (0.70)
        _valuation(
            root / "dropout/cggm" / f"seed{seed}",
            lambda s: 0.895 if len(s) == 4 else 0.70 if s == ("t1",) else 0.85,
        )
        for m in MODALITIES:
            run = root / "reference" / f"unimodal-{m}" / f"seed{seed}"
            run.mkdir(parents=True)
            validation = {f"val/dice/{r}": 0.8 for r in ("tc", "wt", "et", "mean")}
            (run / "metrics.json").write_text(json.dumps({"validation": validation}))
    out = tmp_path / "out"
    command = [sys.executable, str(SCRIPT), str(root), "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    tables = (out / "tables.md").read_text()
    cggm = tables.split("### CGGM + modality dropout")[1]
    assert "| flair+t1ce+t1+t2 | 0.895 ± 0.000 |" in cggm
    # the 15-subset mean: (0.895 + 0.70 + 13 * 0.85) / 15
    assert f"| **mean of the 15** |  |  |  | {(0.895 + 0.70 + 13 * 0.85) / 15:.3f} ± 0.000 | 0, 1 |" in cggm
    assert f"| 0 | {(0.895 + 0.70 + 13 * 0.85) / 15:.3f} | -0.100 (t1) | -0.005 |" in cggm
    assert "### joint + modality dropout" in tables  # a model without runs yet keeps its (empty) table
    with open(out / "rows.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["model"] for r in rows} == {"joint", "CGGM + modality dropout", *(f"{m} only" for m in MODALITIES)}
    assert len(rows) == 2 * (2 * 15 * 4 + 4 * 4)

    again = subprocess.run(command, capture_output=True, text=True, check=False)
    assert again.returncode != 0 and "--overwrite" in again.stderr
