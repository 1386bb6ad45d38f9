"""Each stage subpackage of ``brats_cggm.brats`` says in one line what it is for and lists all its modules."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

import brats_cggm.brats

BRATS = Path(brats_cggm.brats.__file__).parent
STAGES = sorted(p.name for p in BRATS.iterdir() if (p / "__init__.py").is_file())


def test_the_stages_are_the_documented_ones():
    assert STAGES == ["analysis", "data", "inference", "metrics", "phantoms", "reporting"]


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_has_a_one_line_docstring_and_lists_every_module(stage: str):
    package = importlib.import_module(f"brats_cggm.brats.{stage}")
    assert package.__doc__ and "\n" not in package.__doc__.strip()
    modules = {p.stem for p in (BRATS / stage).glob("*.py") if p.stem != "__init__"}
    modules |= {p.name for p in (BRATS / stage).iterdir() if (p / "__init__.py").is_file()}
    assert sorted(package.__all__) == sorted(modules)
