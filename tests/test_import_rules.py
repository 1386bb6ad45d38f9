"""Which package of ``brats_cggm`` may import which, checked on the source (every import, lazy ones included).

The layers, lowest first: ``core`` < ``engine``, ``balancing`` < ``brats``, ``adapters`` < ``selection``,
``experiments``, ``benchmarking`` < ``cli``. A package imports only packages of lower layers; packages of one
layer never import each other. Inside ``brats`` the stages are ordered the same way: ``phantoms`` < ``data`` <
``metrics`` < ``reporting`` < ``inference`` < ``analysis``, with ``model`` and ``task`` (core only) under
``inference``.
The bundle configs, which run in training and inference, import neither the command lines nor the offline
packages built on the library.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "brats_cggm"

_TASKS = {"core", "engine", "balancing", "brats", "adapters"}

#: The packages of brats_cggm each package may import (itself always allowed).
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "engine": {"core"},
    "balancing": {"core"},
    "brats": {"core", "engine"},
    "adapters": {"core", "engine"},
    "selection": _TASKS,
    "experiments": _TASKS,
    "benchmarking": _TASKS,
    "cli": _TASKS | {"selection", "experiments", "benchmarking"},
}


#: Pairs that never import each other.
SEPARATE = [
    ("engine", "balancing"),
    ("brats", "adapters"),
    ("selection", "experiments"),
    ("selection", "benchmarking"),
    ("experiments", "benchmarking"),
]

#: The stages of brats_cggm.brats (subpackages, or the modules at its top) each stage may import.
BRATS_STAGES: dict[str, set[str]] = {
    "phantoms": set(),
    "data": {"phantoms"},
    "metrics": {"data", "phantoms"},
    "reporting": {"data", "phantoms", "metrics"},
    "inference": {"data", "phantoms", "metrics", "reporting", "model", "task"},
    "analysis": {"data", "phantoms", "metrics", "reporting", "inference", "model", "task"},
    "model": set(),
    "encoder_weights": {"model"},
    "task": set(),
    "validation_images": {"data"},
}
#: What model.py and task.py import of brats_cggm: core only, so that every stage may build on them.
BRATS_CORE_ONLY = ("model", "task")

#: Packages the bundle configs must not import.
NOT_IN_CONFIGS = ("selection", "experiments", "benchmarking", "cli")


@cache
def imported_modules(path: Path) -> frozenset[str]:
    """The ``brats_cggm`` modules one source file imports, as dotted names without ``brats_cggm.``.

    ``from brats_cggm.x import y`` counts as ``x`` and ``x.y`` (``y`` may be a module or a name).
    """
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
                names.add(".".join(parts[1:]))
    return frozenset(names)


def imported_packages(package: str) -> dict[str, set[str]]:
    """The ``brats_cggm`` subpackages each module of ``package`` imports (itself left out), by module path."""
    return {
        _relative(path): {name.split(".")[0] for name in imported_modules(path)} - {package}
        for path in sorted((PACKAGE / package).rglob("*.py"))
    }


def _relative(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def _subpackages() -> list[str]:
    return sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists())


def _module_cases() -> list:
    cases = []
    for package in sorted(ALLOWED):
        for path in sorted((PACKAGE / package).rglob("*.py")):
            name = _relative(path)
            cases.append(pytest.param(package, name, id=name))
    return cases


def _brats_stage(path: Path) -> str | None:
    """The stage of a module of ``brats_cggm.brats``; None for ``brats/__init__.py``."""
    parts = path.relative_to(PACKAGE / "brats").with_suffix("").parts
    return None if parts == ("__init__",) else parts[0]


def _brats_stages_imported(path: Path) -> set[str]:
    stages = set()
    for name in imported_modules(path):
        parts = name.split(".")
        if parts[0] == "brats":
            if len(parts) == 1:
                raise AssertionError(f"{path}: imports brats_cggm.brats itself; import from its stages")
            stages.add(parts[1])
    return stages


def test_every_package_has_a_rule():
    assert sorted(ALLOWED) == _subpackages()


def test_every_brats_stage_has_a_rule():
    found = {_brats_stage(path) for path in (PACKAGE / "brats").rglob("*.py")} - {None}
    assert found == set(BRATS_STAGES)


@pytest.mark.parametrize("package,module", _module_cases())
def test_module_imports_only_what_its_package_may(package, module):
    names = {name.split(".")[0] for name in imported_modules(REPO / module)} - {package}
    assert not names - ALLOWED[package], f"{module} imports {sorted(names - ALLOWED[package])}"


@pytest.mark.parametrize("first,second", SEPARATE + [(b, a) for a, b in SEPARATE])
def test_packages_of_one_layer_do_not_import_each_other(first, second):
    bad = [path for path, names in imported_packages(first).items() if second in names]
    assert not bad, f"{first} imports {second}"


@pytest.mark.parametrize("stage", sorted(BRATS_STAGES))
def test_brats_stage_imports_only_earlier_stages(stage):
    bad = {}
    for path in sorted((PACKAGE / "brats").rglob("*.py")):
        if _brats_stage(path) == stage:
            extra = _brats_stages_imported(path) - BRATS_STAGES[stage] - {stage}
            if extra:
                bad[_relative(path)] = sorted(extra)
    assert not bad, f"brats.{stage} may import only {sorted(BRATS_STAGES[stage])} of brats"


@pytest.mark.parametrize("stage", BRATS_CORE_ONLY)
def test_brats_model_and_task_import_only_core(stage):
    path = PACKAGE / "brats" / f"{stage}.py"
    packages = {name.split(".")[0] for name in imported_modules(path)}
    assert packages <= {"core"}, f"brats/{stage}.py imports {sorted(packages - {'core'})}"


def _config_files() -> list[Path]:
    return sorted([*REPO.glob("bundles/*/configs/*.yaml"), *REPO.glob("configs/**/*.yaml")])


_CONFIG_REFERENCE = re.compile(r"\bbrats_cggm\.(\w+)")


@pytest.mark.parametrize("config", _config_files(), ids=_relative)
def test_configs_import_only_the_library(config):
    packages = set(_CONFIG_REFERENCE.findall(config.read_text()))
    assert not packages & set(NOT_IN_CONFIGS), f"{_relative(config)} imports {sorted(packages & set(NOT_IN_CONFIGS))}"


def test_the_scan_sees_imports():
    assert "core" in imported_packages("engine")["brats_cggm/engine/trainer.py"]
    assert "data" in _brats_stages_imported(PACKAGE / "brats" / "inference" / "segmenter.py")
    assert _config_files() and any("brats" in _CONFIG_REFERENCE.findall(c.read_text()) for c in _config_files())
