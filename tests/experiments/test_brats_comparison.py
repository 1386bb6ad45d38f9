"""The comparison's measurements on a real tiny run (the CLI's tests fake them), and its summary."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from brats_cggm.experiments.brats_comparison import ComparisonSettings, lesionwise_of_run, shapley_of_run
from brats_cggm.experiments.comparison_columns import LESIONWISE_COLUMNS, ROBUSTNESS_COLUMNS, subset_dice_key
from brats_cggm.experiments.comparison_summary import summary_markdown


def test_lesionwise_dice_of_a_real_run(tiny_run_dir: Path, phantom_dataset: Path) -> None:
    values = lesionwise_of_run(tiny_run_dir, str(phantom_dataset), seed=0, val_fraction=0.2, device="cpu")
    assert sorted(values) == sorted(LESIONWISE_COLUMNS)
    assert all(0.0 <= v <= 1.0 for v in values.values())
    regions = [values[c] for c in LESIONWISE_COLUMNS[:-1]]
    assert values["lesionwise_dice/mean"] == pytest.approx(sum(regions) / 3)


def test_shapley_and_subsets_of_a_real_run(tiny_run_dir: Path, phantom_dataset: Path, tmp_path: Path) -> None:
    run_dir = Path(shutil.copytree(tiny_run_dir, tmp_path / "run"))  # the valuation writes into the run
    # a comparison measures the last epoch's network: a run that saved no best network compares as any other
    (run_dir / "models" / "model.pt").unlink()
    assert set(lesionwise_of_run(run_dir, str(phantom_dataset), seed=0, val_fraction=0.2, device="cpu")) == set(
        LESIONWISE_COLUMNS
    )
    values = shapley_of_run(run_dir, str(phantom_dataset), seed=0, val_fraction=0.2, device="cpu")
    subsets = {k: v for k, v in values.items() if k.startswith(subset_dice_key(""))}
    assert len(subsets) == 15 and subset_dice_key("flair+t1ce+t1+t2") in subsets
    assert values[ROBUSTNESS_COLUMNS[0]] == pytest.approx(sum(subsets.values()) / 15)
    assert values[ROBUSTNESS_COLUMNS[1]] == min(subsets.values())
    assert json.loads((run_dir / "valuation" / "shapley.json").read_text())["absent"] == "mask"  # the default


def test_step_time_is_relative_to_joint_with_the_same_optimizer(tmp_path: Path) -> None:
    def row(balancer: str, optimizer: str, step: float) -> dict:
        method = balancer if optimizer == "adamw" else f"{balancer}-{optimizer}"
        validation = {"val/dice/mean": 0.5}
        return {"method": method, "seed": 0, "balancer": balancer, "optimizer": optimizer, "modalities": None,
                "seconds_per_iteration": step, "validation": validation}  # fmt: skip

    settings = ComparisonSettings(
        out_dir=tmp_path, methods=["joint", "cggm"], seeds=[0], optimizers=["adamw", "sgd"], shapley=False
    )
    rows = [row("joint", "adamw", 1.0), row("cggm", "adamw", 1.5), row("joint", "sgd", 2.0), row("cggm", "sgd", 2.2)]
    summary = summary_markdown(rows, settings)
    lines = {line.split(" | ")[0]: line for line in summary.splitlines() if line.startswith("| ")}
    assert lines["| cggm"].endswith("| 1.50 |") and lines["| cggm-sgd"].endswith("| 1.10 |")
    assert lines["| joint-sgd"].endswith("| 1.00 |")
