"""The comparison's measurements on a real tiny run (the CLI's tests fake them)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from brats_cggm.experiments.brats_comparison import (
    LESIONWISE_COLUMNS,
    ROBUSTNESS_COLUMNS,
    lesionwise_of_run,
    shapley_of_run,
    subset_dice_key,
)


def test_lesionwise_dice_of_a_real_run(tiny_run_dir: Path, phantom_dataset: Path) -> None:
    values = lesionwise_of_run(tiny_run_dir, str(phantom_dataset), seed=0, val_fraction=0.2, device="cpu")
    assert sorted(values) == sorted(LESIONWISE_COLUMNS)
    assert all(0.0 <= v <= 1.0 for v in values.values())
    regions = [values[c] for c in LESIONWISE_COLUMNS[:-1]]
    assert values["lesionwise_dice/mean"] == pytest.approx(sum(regions) / 3)


def test_shapley_and_subsets_of_a_real_run(tiny_run_dir: Path, phantom_dataset: Path, tmp_path: Path) -> None:
    run_dir = Path(shutil.copytree(tiny_run_dir, tmp_path / "run"))  # the valuation writes into the run
    values = shapley_of_run(run_dir, str(phantom_dataset), seed=0, val_fraction=0.2, device="cpu")
    subsets = {k: v for k, v in values.items() if k.startswith(subset_dice_key(""))}
    assert len(subsets) == 15 and subset_dice_key("flair+t1ce+t1+t2") in subsets
    assert values[ROBUSTNESS_COLUMNS[0]] == pytest.approx(sum(subsets.values()) / 15)
    assert values[ROBUSTNESS_COLUMNS[1]] == min(subsets.values())
    assert (run_dir / "valuation").is_dir()
