"""``brats-cggm-qc FOLDER``: writes the page, reports what it skipped, refuses to replace it without --overwrite."""

from __future__ import annotations

from pathlib import Path

import pytest

from brats_cggm.cli.qc import main
from tests.helpers.qc_reports import write_report_folder


def test_qc_writes_the_page_and_names_the_files_it_left_out(tmp_path: Path, capsys: pytest.CaptureFixture):
    folder = write_report_folder(tmp_path / "out")
    assert main([str(folder)]) == 1  # broken.json is unreadable: the page is written, the exit says so
    captured = capsys.readouterr()
    assert "written: " in captured.out and "(4 case(s), 2 flagged, 1 skipped)" in captured.out
    assert f"warning: {folder / 'E.json'}: skipped: no report_version" in captured.err
    assert f"error: {folder / 'broken.json'}: unreadable:" in captured.err
    page = (folder / "index.html").read_text(encoding="utf-8")
    assert 'data-case="B"' in page

    (folder / "broken.json").unlink()
    assert main([str(folder)]) == 1
    assert "index.html: exists; pass --overwrite" in capsys.readouterr().err
    assert (folder / "index.html").read_text(encoding="utf-8") == page
    assert main([str(folder), "--overwrite"]) == 0
    assert "broken.json" not in (folder / "index.html").read_text(encoding="utf-8")


def test_qc_errors(tmp_path: Path, capsys: pytest.CaptureFixture):
    assert main([str(tmp_path / "nowhere")]) == 1
    assert "nowhere: not a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path), "--overwrit"])  # no abbreviations
    assert exc.value.code == 2
