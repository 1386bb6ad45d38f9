"""The QC page's rows, what it skips and why, escaping, thumbnails and the no-replace rule of its writing."""

from __future__ import annotations

import base64
import io
import json
import sys
from pathlib import Path

import pytest
from PIL import Image

from brats_cggm.brats.reporting.qc_page import (
    QC_PAGE_NAME,
    THUMBNAIL_PIXELS,
    collect_qc_rows,
    qc_row,
    render_qc_page,
    thumbnail_data_uri,
    write_qc_page,
)
from brats_cggm.core.files import temporary_files
from tests.helpers.qc_reports import report, write_case, write_report_folder


def _picture(uri: str) -> Image.Image:
    assert uri.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))


def test_rows_put_flagged_cases_first_and_list_the_files_left_out(tmp_path: Path):
    rows = collect_qc_rows(write_report_folder(tmp_path))
    assert [row.case_id for row in rows.rows] == ["B", "C", "A", "D"]
    assert [name for name, _ in rows.skipped] == ["E.json"]
    assert "no report_version" in rows.skipped[0][1]
    assert [name for name, _ in rows.unreadable] == ["broken.json"]
    b = rows.rows[0]
    assert b.modalities_missing == ("t1ce",) and b.flags == (("flag0", "message 0 of B"),)
    assert b.regions["WT"].volume_ml == 2.5 and b.regions["TC"].lesions == 2
    assert list(b.regions) == ["ET", "TC", "WT"] == rows.regions
    assert b.segmentation_exists and b.overlay == "B.png"
    # 240 x 80 downscaled to THUMBNAIL_PIXELS on its longer side, the aspect kept
    assert b.thumbnail is not None and _picture(b.thumbnail).size == (THUMBNAIL_PIXELS, THUMBNAIL_PIXELS // 3)


@pytest.mark.parametrize(
    "changes,reason",
    [
        ({"report_version": 2}, "report_version 2; this page reads 1"),
        ({"case_id": 3}, "case_id is not a non-empty string"),
        ({"segmentation": "../A.nii.gz"}, "segmentation is not a file name in the folder"),
        ({"overlay": "/tmp/A.png"}, "overlay is neither null nor a file name"),
        ({"modalities_used": "flair"}, "modalities_used is not a list of strings"),
        ({"regions": {"XX": {}}}, "unknown region 'XX'"),
        ({"regions": {"WT": {"volume_ml": 1.0, "lesions": 1}}}, "regions.WT has no largest_lesion_ml"),
        ({"regions": {"WT": {"volume_ml": 1.0, "lesions": -1, "largest_lesion_ml": 1.0}}}, "lesions is not a count"),
        ({"regions": {"WT": {"volume_ml": "1", "lesions": 1, "largest_lesion_ml": 1}}}, "volume_ml is not a finite"),
        ({"regions": {"WT": {"volume_ml": float("nan"), "lesions": 1, "largest_lesion_ml": 1}}}, "not a finite"),
        ({"flags": [{"name": "x"}]}, "a flag is not {name, message} strings"),
    ],
)
def test_a_record_not_matching_the_report_is_skipped_with_its_reason(tmp_path: Path, changes: dict, reason: str):
    (tmp_path / "A.json").write_text(json.dumps({**report("A"), **changes}))
    rows = collect_qc_rows(tmp_path)
    assert rows.rows == [] and rows.unreadable == []
    assert rows.skipped[0][0] == "A.json" and reason in rows.skipped[0][1]


def test_a_record_without_a_required_key_or_not_an_object_is_skipped(tmp_path: Path):
    record = report("A")
    del record["flags"]
    with pytest.raises(ValueError, match=r"^no flags$"):
        qc_row(record, tmp_path, "A.json")
    with pytest.raises(ValueError, match="not a JSON object"):
        qc_row([record], tmp_path, "A.json")


def test_the_page_escapes_every_text_taken_from_the_files(tmp_path: Path):
    evil = '<script>alert("x")</script>'
    flags = [{"name": "<i>n</i>", "message": "'\"&<>"}]
    record = report(evil, segmentation='a"b<c>.nii.gz', modalities_used=["<b>flair</b>"], flags=flags)
    (tmp_path / "evil.json").write_text(json.dumps({**record, "overlay": "a&b.png"}))
    (tmp_path / 'a"b<c>.nii.gz').write_bytes(b"")
    rows = collect_qc_rows(tmp_path)
    assert [row.case_id for row in rows.rows] == [evil]
    page = render_qc_page(rows)
    assert "<script>alert" not in page and "<b>flair" not in page and "<i>n" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "&#x27;&quot;&amp;&lt;&gt;" in page
    # links are URL-quoted, relative and escaped; the text shows the name
    assert 'href="a%22b%3Cc%3E.nii.gz"' in page and "a&quot;b&lt;c&gt;.nii.gz" in page
    assert 'href="a%26b.png"' in page  # named, absent: a link and "(unreadable)", no picture


def test_absent_overlay_and_label_map_are_marked_and_regions_are_the_union(tmp_path: Path):
    write_case(tmp_path, report("A"))
    (tmp_path / "A.png").unlink()
    (tmp_path / "A.nii.gz").unlink()
    extra = {"volume_ml": 1.5, "lesions": 1, "largest_lesion_ml": 1.5}
    write_case(tmp_path, report("B", overlay=False, regions={"WT": extra, "RC": extra}))
    rows = collect_qc_rows(tmp_path)
    a, b = rows.rows
    assert a.thumbnail is None and not a.segmentation_exists and b.overlay is None
    assert rows.regions == ["ET", "TC", "WT", "RC"]
    page = render_qc_page(rows)
    assert "(unreadable)" in page and "A.nii.gz <span" in page and "<td>none</td>" in page
    assert "RC ml" in page and page.count('data-sort=""') == 6  # A has no RC, B no ET nor TC: 2 cells each
    assert "<img" not in page


def test_write_refuses_to_replace_the_page_unless_asked(tmp_path: Path):
    write_report_folder(tmp_path)
    path = write_qc_page(tmp_path)
    assert path == tmp_path / QC_PAGE_NAME
    page = path.read_text(encoding="utf-8")
    assert (
        page.startswith("<!DOCTYPE html>") and "4 case(s), 2 flagged; 1 file(s) skipped; 1 file(s) unreadable" in page
    )
    assert "E.json" in page and "broken.json" in page
    # self-contained: no file nor address is fetched, only data: pictures
    assert "http" not in page.replace("http-equiv", "") and page.count('src="data:image/png;base64,') == 4
    path.write_text("kept")
    with pytest.raises(FileExistsError, match=r"index\.html: exists; pass --overwrite"):
        write_qc_page(tmp_path)
    assert path.read_text() == "kept"
    assert write_qc_page(tmp_path, overwrite=True).read_text(encoding="utf-8") == page
    assert temporary_files(path) == []
    with pytest.raises(NotADirectoryError):
        write_qc_page(tmp_path / "nowhere")


def test_without_pillow_the_png_goes_in_as_it_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    write_case(tmp_path, report("A"))
    (tmp_path / "text.png").write_text("not a picture")
    assert thumbnail_data_uri(tmp_path / "text.png") is None
    monkeypatch.setitem(sys.modules, "PIL", None)  # import PIL raises ImportError
    uri = thumbnail_data_uri(tmp_path / "A.png")
    assert uri is not None and base64.b64decode(uri.split(",", 1)[1]) == (tmp_path / "A.png").read_bytes()
    assert thumbnail_data_uri(tmp_path / "text.png") is None
    assert json.loads((tmp_path / "A.json").read_text())["overlay"] == "A.png"
