"""The "modality balance" custom-scalars layout: its charts, and that every training run writes it."""

from __future__ import annotations

import re
from pathlib import Path

from brats_cggm.core.events import read_scalars
from brats_cggm.engine.tensorboard_layout import LAYOUT_CATEGORY, balancer_chart_groups, modality_balance_layout
from tests.helpers.event_files import custom_scalars_layouts

MODALITIES = ("flair", "t1ce", "t1", "t2")


def test_groups_of_a_balancers_tags() -> None:
    tags = ["cggm/epsilon/flair", "cggm/B/flair", "cggm/B/t1", "cggm/loss", "cggm/epsilon/t2", "x/flair2"]
    assert balancer_chart_groups(tags, MODALITIES) == ["cggm/epsilon", "cggm/B"]
    assert balancer_chart_groups({}, MODALITIES) == []


def test_layout_charts() -> None:
    layout = modality_balance_layout(MODALITIES, ["cggm/B/flair", "cggm/B/t1ce", "cggm/B/t1", "cggm/B/t2"])
    charts = layout[LAYOUT_CATEGORY]
    assert list(charts) == ["train/modality_dice", "grad_norm", "cggm/B"]
    assert charts["cggm/B"] == ["Multiline", [r"cggm/B/flair", r"cggm/B/t1ce", r"cggm/B/t1", r"cggm/B/t2"]]
    # the tags are regular expressions: t1 must not also draw t1ce
    assert [t for t in ("grad_norm/t1", "grad_norm/t1ce") if re.fullmatch(charts["grad_norm"][1][2], t)] == [
        "grad_norm/t1"
    ]
    # a balancer without per-modality scalars (joint) gets the two common charts only
    assert list(modality_balance_layout(MODALITIES)[LAYOUT_CATEGORY]) == ["train/modality_dice", "grad_norm"]


def test_training_run_writes_the_layout(tiny_run_dir: Path) -> None:
    layouts = custom_scalars_layouts(tiny_run_dir)
    assert len(layouts) == 1  # written once
    charts = layouts[0][LAYOUT_CATEGORY]
    assert charts["train/modality_dice"] == [f"train/modality_dice/{m}" for m in MODALITIES]
    assert charts["cggm/B"] == [f"cggm/B/{m}" for m in MODALITIES]
    # every charted tag is one the run wrote
    written = set(read_scalars(tiny_run_dir))
    assert {tag for chart in charts.values() for tag in chart} <= written
