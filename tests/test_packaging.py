"""The wheel ships the bundles and the overlay configs as package data (``setup.py``, ``brats_cggm._resources``)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: What a wheel is built from (the rest of the checkout is not needed).
SOURCES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "LICENSE", "brats_cggm", "bundles", "configs")


def _shipped(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def test_wheel_holds_every_bundle_and_overlay_file(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=ignore)
        else:
            shutil.copy2(path, source / name)
    cmd = [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q"]
    built = subprocess.run([*cmd, "-w", str(tmp_path / "dist")], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("brats_cggm-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for tree in ("bundles", "configs"):
        expected = {f"brats_cggm/_resources/{tree}/{name}" for name in _shipped(REPO / tree)}
        assert expected <= names, f"{wheel.name} lacks {sorted(expected - names)}"
    assert "brats_cggm/_resources/bundles/brats_cggm/configs/train.yaml" in names
    assert "brats_cggm/_resources/configs/balancers/cggm.yaml" in names
    assert "brats_cggm/_resources/configs/ablations/cggm/authors.yaml" in names
    assert "brats_cggm/core/resources.py" in names
