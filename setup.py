"""Ships ``bundles/`` and ``configs/`` inside the wheel, as ``brats_cggm/_resources/{bundles,configs}``.

The repository keeps the two trees at its root, where the README's commands name them; ``build_py`` copies
them into the built package so an installed ``brats_cggm`` finds them (``brats_cggm.core.resources``). An
editable install reads them from the checkout instead. Everything else is in ``pyproject.toml``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
#: The trees shipped as package data, copied to ``brats_cggm/_resources/<name>``.
SHIPPED = ("bundles", "configs")


class BuildWithResources(build_py):
    """``build_py`` that also copies :data:`SHIPPED` into ``brats_cggm/_resources/``."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        for name in SHIPPED:
            source = ROOT / name
            if not source.is_dir():
                raise FileNotFoundError(f"{source}: missing; the wheel ships it as package data")
            target = Path(self.build_lib, "brats_cggm", "_resources", name)
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


setup(cmdclass={"build_py": BuildWithResources})
