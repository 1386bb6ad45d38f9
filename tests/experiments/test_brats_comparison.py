"""The comparison's measurements on a real tiny run (the CLI's tests fake them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from brats_cggm.experiments.brats_comparison import LESIONWISE_COLUMNS, lesionwise_of_run


def test_lesionwise_dice_of_a_real_run(tiny_run_dir: Path, phantom_dataset: Path) -> None:
    values = lesionwise_of_run(tiny_run_dir, str(phantom_dataset), seed=0, val_fraction=0.2, device="cpu")
    assert sorted(values) == sorted(LESIONWISE_COLUMNS)
    assert all(0.0 <= v <= 1.0 for v in values.values())
    regions = [values[c] for c in LESIONWISE_COLUMNS[:-1]]
    assert values["lesionwise_dice/mean"] == pytest.approx(sum(regions) / 3)
