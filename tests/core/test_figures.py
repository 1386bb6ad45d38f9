"""Figures: the PNG writer and the message without matplotlib."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from brats_cggm.core.figures import import_pyplot, save_png


def test_save_png_writes_a_whole_png(tmp_path: Path) -> None:
    plt = import_pyplot("this test")
    figure, axis = plt.subplots()
    axis.plot([0, 1], [1, 0])
    path = save_png(figure, tmp_path / "figure.png")
    plt.close(figure)
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert [p.name for p in tmp_path.iterdir()] == ["figure.png"]  # no temporary left


def test_without_matplotlib_the_extra_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"these figures need matplotlib: pip install 'brats-cggm\[plots\]'"):
        import_pyplot("these figures")
