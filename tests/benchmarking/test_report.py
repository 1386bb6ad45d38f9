"""The JSON report file."""

from __future__ import annotations

import json

import pytest

from brats_cggm.benchmarking.report import write_report


def test_report_is_written_whole_and_never_over_an_existing_file(tmp_path):
    out = tmp_path / "sub" / "b.json"
    write_report(out, {"a": [1, 2]})
    assert out.read_text() == json.dumps({"a": [1, 2]}, indent=2) + "\n"
    with pytest.raises(FileExistsError, match="--overwrite"):
        write_report(out, {"a": 3})
    assert json.loads(out.read_text()) == {"a": [1, 2]}
    write_report(out, {"a": 3}, overwrite=True)
    assert json.loads(out.read_text()) == {"a": 3}
    assert [p.name for p in out.parent.iterdir()] == ["b.json"]
