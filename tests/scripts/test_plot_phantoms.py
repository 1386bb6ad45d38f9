"""scripts/plot_phantoms.py through its command line, on coarse anatomical phantoms of each variant."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "plot_phantoms.py"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _env() -> dict[str, str]:
    """The environment with this checkout first on the path (the script imports the package)."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


@pytest.mark.parametrize("variant", ["default", "t2-flair-mismatch"])
def test_plot_phantoms_writes_a_png(tmp_path: Path, variant: str) -> None:
    pytest.importorskip("matplotlib", reason="the plots extra is needed")
    pytest.importorskip("nilearn", reason="the anatomy extra is needed")
    out = tmp_path / "phantoms.png"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out), "--seeds", "0", "--spacing", "8", "--variant", variant],
        capture_output=True,
        text=True,
        env=_env(),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}" in result.stdout
    assert out.read_bytes().startswith(PNG_SIGNATURE)


def test_plot_phantoms_refuses_an_unknown_variant(tmp_path: Path) -> None:
    out = tmp_path / "phantoms.png"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out), "--variant", "mismatch"],
        capture_output=True,
        text=True,
        env=_env(),
        check=False,
    )
    assert result.returncode == 2 and "invalid choice" in result.stderr
    assert not out.exists()
