"""The fault matrix's machinery (scripts/fault_matrix.py): a real row through the CLI, the verdict logic, the report."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def fm():
    spec = importlib.util.spec_from_file_location("fault_matrix", REPO / "scripts" / "fault_matrix.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["fault_matrix"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("fault_matrix", None)


def _row(fm, name: str):
    return next(r for r in fm.ROWS if r.name == name)


def test_rows_are_unique_and_selectable(fm):
    names = [r.name for r in fm.ROWS]
    assert len(names) == len(set(names))
    assert [r.name for r in fm.select(fm.ROWS, "^infer/zero-byte$")] == ["infer/zero-byte"]
    assert {r.name.split("/")[0] for r in fm.ROWS} >= {"infer", "evaluate", "train", "cache", "bundle-infer", "adapter"}


def test_zero_byte_input_through_the_cli_fails_naming_the_file(fm, tmp_path: Path):
    """A real row: the infer CLI on a case with an empty t1 file (a random tiny bundle, no training)."""
    results = fm.run_matrix([_row(fm, "infer/zero-byte")], tmp_path)
    (result,) = results
    assert result.results[-1].returncode not in (0, None)
    assert "BraTS2021_00000_t1.nii.gz" in fm.first_error_line(result.results[-1])
    assert result.verdict.exit_ok and result.verdict.message_ok and result.verdict.nothing_lost
    assert result.new == []  # nothing written for a failed case
    report = fm.render(results, {"date": "d", "commit": "c", "machine": "m", "filter": ""})
    assert "| 1 | `infer/zero-byte` |" in report and report.rstrip().endswith("1 rows, 1 as expected.")


def _python_row(fm, code: str, **expectations):
    def setup(ws: Path, _fixtures) -> list:
        (ws / "keep.txt").write_text("earlier result\n")
        return [fm.Step(fm.python(code, "python -c ..."))]

    return fm.Row("test/python", setup, **expectations)


def test_verdict_flags_a_changed_file_a_stray_tmp_and_a_missing_message(fm, tmp_path: Path):
    code = (
        "import sys; open('keep.txt', 'w').write('replaced'); open('.x.tmp', 'w').write('half');"
        "sys.exit('error: something failed')"
    )
    row = _python_row(fm, code, expect_ok=False, message=("keep.txt",), one_line=True)
    result = fm.run_row(row, fm.Fixtures(tmp_path / "fixtures"), tmp_path)
    verdict = result.verdict
    assert verdict.exit_ok  # exit 1, as expected
    assert verdict.message_ok is False and not verdict.nothing_lost and not verdict.nothing_half_written
    assert not verdict.as_expected
    assert result.changed == ["keep.txt"] and result.new == [".x.tmp"]
    text = "; ".join(verdict.problems)
    assert "changed: keep.txt" in text and ".x.tmp" in text and "'keep.txt'" in text


def test_verdict_of_a_clean_refusal_and_of_a_signal(fm, tmp_path: Path):
    fixtures = fm.Fixtures(tmp_path / "fixtures")
    refusal = _python_row(fm, "import sys; sys.exit('error: keep.txt: exists')", expect_ok=False, message=("keep.txt",))
    assert fm.run_row(refusal, fixtures, tmp_path).verdict.as_expected
    crash = _python_row(fm, "import os, signal; os.kill(os.getpid(), signal.SIGABRT)", expect_ok=False)
    result = fm.run_row(crash, fixtures, tmp_path)
    assert not result.verdict.exit_ok and "SIGABRT" in result.verdict.problems[0]


def test_a_background_step_runs_beside_the_next_and_the_verdict_is_the_foregrounds(fm, tmp_path: Path):
    slow = "import pathlib as p, time; p.Path('started').write_text('1'); time.sleep(1); p.Path('done').write_text('1')"
    probe = "import pathlib, sys; sys.exit('error: done too early' if pathlib.Path('done').exists() else 0)"

    def setup(ws: Path, _fixtures) -> list:
        background = fm.Step(fm.python(slow, "slow"), background_until=lambda cwd: (cwd / "started").exists())
        return [background, fm.Step(fm.python(probe, "probe"))]

    row = fm.Row("test/background", setup, expect_ok=True, writes=("started", "done"))
    result = fm.run_row(row, fm.Fixtures(tmp_path / "fixtures"), tmp_path)
    first, second = result.results
    assert first.background and first.returncode == 0 and not second.background
    assert second.returncode == 0  # the probe ran while the slow step was still sleeping
    assert result.verdict.as_expected and sorted(result.new) == ["done", "started"]
