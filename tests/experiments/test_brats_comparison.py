"""The comparison's measurements on a real tiny run (the CLI's tests fake them), and its summary."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from brats_cggm.brats.phantoms.geometric import write_phantom_dataset
from brats_cggm.experiments.brats_comparison import (
    ComparisonSettings,
    held_out_of_run,
    held_out_phantoms,
    lesionwise_of_run,
    run_phantoms,
    shapley_of_run,
)
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


def test_held_out_test_set_of_a_real_run(tiny_run_dir: Path, phantom_dataset: Path, tmp_path: Path) -> None:
    run_dir = Path(shutil.copytree(tiny_run_dir, tmp_path / "run"))  # the valuation writes into the run
    test_dir = tmp_path / "test"
    write_phantom_dataset(test_dir, n=1, shape=(32, 32, 32), seed=50_000)
    values = held_out_of_run(run_dir, str(phantom_dataset), 0, 0.2, test_dir, "cpu", absent="mask")
    assert all(key.startswith("test/") for key in values)
    assert {"test/dice/mean", "test/lesionwise_dice/mean", "test/robustness/mean_subsets"} <= set(values)
    assert len([k for k in values if k.startswith("test/subset_dice/")]) == 15
    assert all(0.0 <= values[f"test/dice/{r}"] <= 1.0 for r in ("tc", "wt", "et"))
    assert values["test/dice/mean"] == pytest.approx(sum(values[f"test/dice/{r}"] for r in ("tc", "wt", "et")) / 3)
    # the valuation ran on the test case only, not on the run's validation cases
    assert json.loads((run_dir / "test_valuation" / "shapley.json").read_text())["num_cases"] == 1
    assert not (run_dir / "valuation").exists()  # the validation cases' reports are not touched
    # without the valuation (a unimodal run, --no-shapley): the Dice columns only
    assert set(held_out_of_run(run_dir, str(phantom_dataset), 0, 0.2, test_dir, "cpu", shapley=False)) == {
        f"test/{kind}/{r}" for kind in ("dice", "lesionwise_dice") for r in ("tc", "wt", "et", "mean")
    }


def test_phantom_draws_per_seed_and_test_sets_never_share_generator_seeds(tmp_path: Path) -> None:
    settings = ComparisonSettings(tmp_path, seeds=[0, 1], smoke=True, phantoms_per_seed=True, test_phantoms=3)
    (train0, p0), (train1, p1) = run_phantoms(settings, 0), run_phantoms(settings, 1)
    (test0, t0), (test1, t1) = held_out_phantoms(settings, 0), held_out_phantoms(settings, 1)
    assert (train0, train1) == (tmp_path / "phantoms" / "seed0", tmp_path / "phantoms" / "seed1")
    assert (test0, test1) == (tmp_path / "test_phantoms" / "seed0", tmp_path / "test_phantoms" / "seed1")
    assert (p0["seed"], p1["seed"], t0["seed"], t1["seed"]) == (0, 100_000, 50_000, 150_000)
    assert p0["n"] == 6 and t0["n"] == 3 and t0["shape"] == p0["shape"] == [32, 32, 32]  # the same generator
    case_seeds = [set(range(p["seed"], p["seed"] + p["n"])) for p in (p0, p1, t0, t1)]
    assert all(a.isdisjoint(b) for i, a in enumerate(case_seeds) for b in case_seeds[i + 1 :])
    assert settings.dataset_dir_of(1) == str(train1)
    with pytest.raises(ValueError, match="train on the bundle's phantoms"):
        ComparisonSettings(tmp_path, test_phantoms=2, extra_overrides={"dataset_dir": "/data/BraTS2021"})
    with pytest.raises(ValueError, match="seeds >= 0"):
        ComparisonSettings(tmp_path, seeds=[-1], phantoms_per_seed=True)


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
