"""Every console script of pyproject.toml: ``--help`` exits 0, shows its own name."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
SCRIPTS = tomllib.loads(PYPROJECT.read_text())["project"]["scripts"]


def test_every_command_of_the_cli_package_is_a_console_script():
    cli_dir = PYPROJECT.parent / "brats_cggm" / "cli"
    modules = {p.stem for p in cli_dir.glob("*.py")} - {"__init__", "common"}
    assert {target.split(":")[0] for target in SCRIPTS.values()} == {f"brats_cggm.cli.{m}" for m in modules}


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_help_exits_0_and_shows_its_own_name(name: str, capsys: pytest.CaptureFixture):
    module_name, function = SCRIPTS[name].split(":")
    main = getattr(importlib.import_module(module_name), function)
    try:
        code = main(["--help"])
    except SystemExit as exc:
        code = exc.code
    assert code in (0, None)
    text = capsys.readouterr().out
    assert text.startswith(f"usage: {name} ")
