"""``brats_cggm.experiments.reports``: summary over seeds, tables, CSV and the report files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from brats_cggm.experiments import reports


def _row(method: str, seed: int, dice: float, step: float) -> dict:
    return {"method": method, "seed": seed, "seconds_per_iteration": step, "validation": {"val/dice/mean": dice}}


def test_summary_mean_std_and_time_ratio():
    rows = [_row("joint", 0, 0.5, 1.0), _row("joint", 1, 0.7, 3.0), _row("cggm", 0, 0.9, 3.0)]
    joint, cggm = reports.summarize(rows)
    assert joint["val/dice/mean"] == pytest.approx((0.6, 0.1414213), abs=1e-6)
    assert cggm["val/dice/mean"] == (0.9, None) and cggm["time_ratio"] == pytest.approx(1.5)
    table = reports.markdown_table([joint, cggm], ["val/dice/mean"])
    assert table.splitlines()[0] == "| method | dice/mean | step time vs joint |"
    assert "| joint | 0.600 ± 0.141 | 1.00 |" in table
    assert "| cggm | 0.900 | 1.50 |" in table  # one run: no spread to show


def test_summary_without_baseline_has_no_ratio():
    (entry,) = reports.summarize([_row("cggm", 0, 0.9, 3.0)])
    assert entry["time_ratio"] is None
    assert "| cggm | 0.900 | — |" in reports.markdown_table([entry], ["val/dice/mean"])


def test_spread_is_shown_per_metric_by_its_own_count():
    rows = [_row("joint", 0, 0.5, 1.0), _row("joint", 1, 0.7, 1.0)]
    rows[0]["validation"]["gap/t1"] = 0.3  # measured on one run so far
    (entry,) = reports.summarize(rows)
    assert entry["counts"] == {"val/dice/mean": 2, "gap/t1": 1}
    table = reports.markdown_table([entry], ["val/dice/mean", "gap/t1"])
    assert "| joint | 0.600 ± 0.141 | 0.300 | 1.00 |" in table


def test_csv_one_line_per_run_with_every_metric(tmp_path: Path):
    rows = [_row("joint", 0, 0.5, 1.0), {**_row("cggm", 1, 0.9, 2.0), "validation": {"val/dice/tc": 0.8}}]
    path = reports.write_csv(rows, tmp_path / "runs.csv")
    with open(path, newline="") as f:
        lines = list(csv.reader(f))
    assert lines[0] == ["method", "seed", "seconds_per_iteration", "val/dice/mean", "val/dice/tc"]
    assert lines[1] == ["joint", "0", "1.0", "0.5", ""] and lines[2] == ["cggm", "1", "2.0", "", "0.8"]
    assert path.read_bytes().count(b"\r\n") == 3  # the csv module's line ends, as before


def test_reports_are_written_once_unless_overwrite(tmp_path: Path):
    rows = [_row("joint", 0, 0.5, 1.0)]
    written = reports.write_reports(tmp_path / "out", "# table\n", rows, statistics={"alpha": 0.05})
    assert sorted(p.name for p in written) == sorted(reports.REPORT_NAMES)
    assert json.loads((tmp_path / "out" / "statistics.json").read_text()) == {"alpha": 0.05}
    assert json.loads((tmp_path / "out" / "rows.json").read_text()) == rows
    assert (tmp_path / "out" / "summary.md").read_text() == "# table\n"
    with pytest.raises(FileExistsError, match=r"summary\.md: exists"):
        reports.write_reports(tmp_path / "out", "# other\n", rows)
    assert (tmp_path / "out" / "summary.md").read_text() == "# table\n"
    reports.write_reports(tmp_path / "out", "# other\n", rows, overwrite=True)
    assert (tmp_path / "out" / "summary.md").read_text() == "# other\n"
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".tmp")]


def test_existing_reports_include_run_folders(tmp_path: Path):
    assert reports.existing_reports(tmp_path, ["joint"]) == []
    (tmp_path / "joint").mkdir()
    (tmp_path / "runs.csv").write_text("")
    assert reports.existing_reports(tmp_path, ["joint", "cggm"]) == [tmp_path / "runs.csv", tmp_path / "joint"]


def test_published_reports_name_no_machine_folder(tmp_path: Path):
    out = tmp_path / "cmp"
    rows = [{**_row("joint", 0, 0.5, 1.0), "run_dir": str(out / "joint" / "seed0")}]
    reports.write_reports(out, f"data {out / 'phantoms'}, reports in {out}\n", rows)
    dest = tmp_path / "docs" / "raw" / "cmp"
    written = reports.publish_reports(out, dest)
    assert sorted(p.name for p in written) == ["rows.json", "runs.csv", "summary.md"]  # no statistics.json here
    assert (dest / "summary.md").read_text() == "data phantoms, reports in .\n"
    assert json.loads((dest / "rows.json").read_text())[0]["run_dir"] == "joint/seed0"
    assert str(tmp_path) not in "".join(p.read_text() for p in written)
    with pytest.raises(FileExistsError):
        reports.publish_reports(out, dest)
    reports.publish_reports(out, dest, overwrite=True)
    with pytest.raises(FileNotFoundError, match="holds no report"):
        reports.publish_reports(tmp_path / "empty", dest)
