"""The comparison's figures, from hand-made rows."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from brats_cggm.experiments.comparison_plots import PLOT_NAMES, write_comparison_plots

MODALITIES = ("flair", "t1ce", "t1", "t2")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _row(balancer: str, optimizer: str, seed: int, diagnosed: bool = True, modalities=None) -> dict:
    suffix = "" if optimizer == "adamw" else f"-{optimizer}"
    validation = {f"val/modality_dice/{m}": 0.2 * i + 0.01 * seed for i, m in enumerate(MODALITIES)}
    validation["val/dice/mean"] = 0.5 + 0.01 * seed
    if diagnosed:
        validation.update({f"shapley/{m}": 0.1 * i for i, m in enumerate(MODALITIES)})
        validation.update({f"gap/{m}": 0.05 - 0.02 * i for i, m in enumerate(MODALITIES)})
        validation.update({"subset_dice/flair": 0.5, "subset_dice/flair+t1ce": 0.8})
    return {
        "method": f"{balancer}{suffix}",
        "balancer": balancer,
        "optimizer": optimizer,
        "modalities": modalities,
        "seed": seed,
        "seconds_per_iteration": 1.0,
        "validation": validation,
    }


def test_both_figures_from_a_comparison(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    rows = [_row(b, o, s) for o in ("adamw", "sgd") for b in ("joint", "cggm") for s in (0, 1)]
    rows.append(_row("joint", "adamw", 0, modalities=["flair"]))  # a unimodal run is not a method's bar
    written = write_comparison_plots(rows, tmp_path)
    assert [p.name for p in written] == list(PLOT_NAMES)
    assert all(p.read_bytes().startswith(PNG_SIGNATURE) for p in written)


def test_only_what_has_data_is_drawn(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    undiagnosed = [_row("joint", "adamw", 0, diagnosed=False)]
    assert [p.name for p in write_comparison_plots(undiagnosed, tmp_path)] == ["modalities.png", "seeds.png"]
    assert write_comparison_plots([_row("joint", "adamw", 0, modalities=["t1"])], tmp_path / "none") == []
    assert not (tmp_path / "none").exists()


def test_without_matplotlib_the_extra_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"the comparison plots need matplotlib: pip install 'brats-cggm\[plots\]'"):
        write_comparison_plots([_row("joint", "adamw", 0)], tmp_path)


def test_seed_points_of_the_family_and_its_held_out_columns(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    rows = [_row(b, "adamw", s, diagnosed=False) for b in ("joint", "cggm") for s in (0, 1, 2)]
    for row in rows:
        row["validation"]["test/dice/mean"] = row["validation"]["val/dice/mean"] - 0.1
    rows[-1]["validation"].pop("val/dice/mean")  # a partial comparison: a run not measured yet
    (figure,) = [p for p in write_comparison_plots(rows, tmp_path, metrics=["val/dice/mean"]) if p.name == "seeds.png"]
    assert figure.read_bytes().startswith(PNG_SIGNATURE)
    # a family no row has: no seeds figure
    written = write_comparison_plots(rows, tmp_path / "none", metrics=["robustness/mean_subsets"])
    assert "seeds.png" not in [p.name for p in written]
