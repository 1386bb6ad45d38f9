"""Which package of ``brats_cggm`` may import which, checked on the source (every import, lazy ones included)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "brats_cggm"

#: The packages of brats_cggm each package may import (itself always allowed).
ALLOWED = {
    "core": set(),
    "engine": {"core"},
    "balancing": {"core"},
}
#: Pairs that never import each other.
SEPARATE = [("brats", "adapters")]


def imported_packages(package: str) -> dict[str, set[str]]:
    """The ``brats_cggm`` subpackages each module of ``package`` imports, by module path."""
    found: dict[str, set[str]] = {}
    for path in sorted((PACKAGE / package).rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                raise AssertionError(f"{path}: relative import; use absolute brats_cggm imports")
            else:
                continue
            for module in modules:
                parts = module.split(".")
                if parts[0] == "brats_cggm" and len(parts) > 1:
                    names.add(parts[1])
        found[str(path.relative_to(PACKAGE.parent))] = names - {package}
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_it_may(package):
    bad = {path: sorted(names - ALLOWED[package]) for path, names in imported_packages(package).items()}
    assert not {path: names for path, names in bad.items() if names}, f"{package} may import only {ALLOWED[package]}"


@pytest.mark.parametrize("first,second", SEPARATE + [(b, a) for a, b in SEPARATE])
def test_task_packages_do_not_import_each_other(first, second):
    bad = [path for path, names in imported_packages(first).items() if second in names]
    assert not bad, f"{first} imports {second}"


def test_the_scan_sees_imports():
    assert "core" in imported_packages("engine")["brats_cggm/engine/trainer.py"]
