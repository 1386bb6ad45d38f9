"""The tests form a package: every folder has an ``__init__.py``; shared helper modules live in ``tests/helpers``."""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parent
#: Modules pytest itself gives a meaning to, allowed in any folder.
PYTEST_MODULES = {"__init__.py", "conftest.py"}


def _folders() -> list[Path]:
    folders = [p for p in sorted(TESTS.rglob("*")) if p.is_dir() and p.name != "__pycache__"]
    return [TESTS] + [p for p in folders if not p.relative_to(TESTS).parts[0].startswith(".")]


def test_every_tests_folder_is_a_package():
    missing = [str(folder.relative_to(TESTS.parent)) for folder in _folders() if not (folder / "__init__.py").is_file()]
    assert not missing, f"add an __init__.py to {missing}"


def test_helper_modules_live_in_tests_helpers():
    helpers = TESTS / "helpers"
    stray = [
        str(path.relative_to(TESTS.parent))
        for path in sorted(TESTS.rglob("*.py"))
        if helpers not in path.parents and not path.name.startswith("test_") and path.name not in PYTEST_MODULES
    ]
    assert not stray, f"move the shared helpers {stray} to tests/helpers (or name them test_*.py if they are tests)"
