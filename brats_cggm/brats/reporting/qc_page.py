"""The QC page of a folder of segmentations: one self-contained ``index.html`` listing every reported case.

``brats-cggm-infer --report`` writes, beside each label map, a record ``<case>.json`` (version
:data:`REPORT_VERSION`: the sequences used and missing, volume and lesions per region, QC flags) and an overlay
picture ``<case>.png``. This module reads those records into rows (:func:`collect_qc_rows`), renders the rows as
one HTML page (:func:`render_qc_page`) and writes it atomically, never over an existing page unless asked
(:func:`save_qc_page`); :func:`write_qc_page` does the three.

The page needs no network and no server: style and script are inline, thumbnails are downscaled PNG data URIs
(so ``index.html`` copied alone still shows them), and the links to each full overlay and label map are
relative. Records that are not reports of this version (older records of ``brats-cggm-infer`` without
``--report``, other JSON files, records missing a field) are skipped and listed on the page with the reason;
files that cannot be read or parsed are listed apart as unreadable. Neither stops the page.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from brats_cggm.core.files import refuse_existing, save_new_file

__all__ = [
    "QC_PAGE_NAME",
    "REGION_NAMES",
    "REPORT_VERSION",
    "THUMBNAIL_PIXELS",
    "QcRow",
    "QcRows",
    "RegionStats",
    "collect_qc_rows",
    "qc_row",
    "render_qc_page",
    "save_qc_page",
    "thumbnail_data_uri",
    "write_qc_page",
]

#: The version of the per-case report this page reads (the record's ``report_version``).
REPORT_VERSION = 1

#: The regions a report may hold, in the page's column order: BraTS 2021 (ET, TC, WT), then BraTS 2023's extra
#: labels (necrosis, edema, resection cavity).
REGION_NAMES: tuple[str, ...] = ("ET", "TC", "WT", "NETC", "SNFH", "RC")

#: The page's file name in the folder.
QC_PAGE_NAME = "index.html"

#: The longer side of a thumbnail, in pixels.
THUMBNAIL_PIXELS = 160

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

_RECORD_KEYS = ("case_id", "segmentation", "modalities_used", "modalities_missing", "regions", "flags", "overlay")


@dataclass(frozen=True)
class RegionStats:
    """One region of a case: its volume, its number of lesions (connected components) and the largest's volume."""

    volume_ml: float
    lesions: int
    largest_lesion_ml: float


@dataclass(frozen=True)
class QcRow:
    """One case of the page, as its report gives it.

    Attributes:
        case_id: the case.
        record: the report's file name.
        segmentation: the label map's file name (relative to the folder).
        segmentation_exists: whether that file is in the folder.
        overlay: the overlay picture's file name, or None when the report has none.
        thumbnail: the overlay downscaled, as a ``data:`` URI; None without an overlay or when it cannot be read.
        modalities_used: the sequences the prediction used.
        modalities_missing: the sequences the case lacked.
        regions: statistics by region name (see :data:`REGION_NAMES`).
        flags: ``(name, message)`` of each QC flag.
    """

    case_id: str
    record: str
    segmentation: str
    segmentation_exists: bool
    overlay: str | None
    thumbnail: str | None
    modalities_used: tuple[str, ...]
    modalities_missing: tuple[str, ...]
    regions: Mapping[str, RegionStats]
    flags: tuple[tuple[str, str], ...]


@dataclass
class QcRows:
    """What a folder holds for its page.

    Attributes:
        folder: the folder.
        rows: the reported cases, flagged ones first, then by case id.
        skipped: ``(file name, reason)`` of JSON files that are not reports this page reads.
        unreadable: ``(file name, error)`` of JSON files that could not be read or parsed.
    """

    folder: Path
    rows: list[QcRow] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)

    @property
    def regions(self) -> list[str]:
        """The regions any row has, in the order of :data:`REGION_NAMES` (the page's columns)."""
        present = {name for row in self.rows for name in row.regions}
        return [name for name in REGION_NAMES if name in present]


class _NotAReport(ValueError):
    """A JSON file that is not a report this page reads; the message is the reason shown on the page."""


def _is_file_name(value: Any) -> bool:
    # a plain name in the folder: links stay inside it
    return (
        isinstance(value, str) and bool(value) and "/" not in value and "\\" not in value and value not in {".", ".."}
    )


def _string_list(record: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = record[key]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _NotAReport(f"{key} is not a list of strings")
    return tuple(value)


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _NotAReport(f"{what} is not a finite number: {value!r}")
    return float(value)


def _region(name: Any, value: Any) -> RegionStats:
    if name not in REGION_NAMES:
        raise _NotAReport(f"unknown region {name!r} (expected one of {', '.join(REGION_NAMES)})")
    if not isinstance(value, dict):
        raise _NotAReport(f"regions.{name} is not an object")
    missing = [k for k in ("volume_ml", "lesions", "largest_lesion_ml") if k not in value]
    if missing:
        raise _NotAReport(f"regions.{name} has no {', '.join(missing)}")
    lesions = value["lesions"]
    if isinstance(lesions, bool) or not isinstance(lesions, int) or lesions < 0:
        raise _NotAReport(f"regions.{name}.lesions is not a count: {lesions!r}")
    return RegionStats(
        _number(value["volume_ml"], f"regions.{name}.volume_ml"),
        lesions,
        _number(value["largest_lesion_ml"], f"regions.{name}.largest_lesion_ml"),
    )


def _flags(value: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, list):
        raise _NotAReport("flags is not a list")
    flags = []
    for flag in value:
        if (
            not isinstance(flag, dict)
            or not isinstance(flag.get("name"), str)
            or not isinstance(flag.get("message"), str)
        ):
            raise _NotAReport(f"a flag is not {{name, message}} strings: {flag!r}")
        flags.append((flag["name"], flag["message"]))
    return tuple(flags)


def _png_data_uri(path: str | os.PathLike) -> str | None:
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    return (
        "data:image/png;base64," + base64.b64encode(data).decode("ascii") if data.startswith(_PNG_SIGNATURE) else None
    )


def thumbnail_data_uri(path: str | os.PathLike, pixels: int = THUMBNAIL_PIXELS) -> str | None:
    """A picture downscaled to at most ``pixels`` on its longer side, as a PNG ``data:`` URI.

    Args:
        path: the picture (an overlay PNG).
        pixels: the longer side of the thumbnail; a smaller picture keeps its size.

    Returns:
        The URI, or None if the file is absent or is not a picture Pillow reads. Without Pillow installed, a PNG
        file's own bytes, not downscaled.
    """
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:  # Pillow is an extra: without it the picture goes in as it is, still in the page
        return _png_data_uri(path)
    try:
        with Image.open(path) as image:
            small = image.convert("RGBA" if "A" in image.getbands() else "RGB")
            small.thumbnail((pixels, pixels))
            buffer = io.BytesIO()
            small.save(buffer, format="PNG", optimize=True)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
        return None
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def qc_row(record: Any, folder: str | os.PathLike, record_name: str) -> QcRow:
    """The page's row of one case's report.

    Args:
        record: the parsed JSON of ``<case>.json``.
        folder: the folder it is in (where its label map and overlay are).
        record_name: its file name, for the row.

    Returns:
        The row, with the overlay's thumbnail.

    Raises:
        ValueError: if ``record`` is not a report of version :data:`REPORT_VERSION`, saying why.
    """
    folder = Path(folder)
    if not isinstance(record, dict):
        raise _NotAReport("not a JSON object")
    if "report_version" not in record:
        raise _NotAReport("no report_version (a record without --report, or not a case report)")
    if record["report_version"] != REPORT_VERSION:
        raise _NotAReport(f"report_version {record['report_version']!r}; this page reads {REPORT_VERSION}")
    missing = [k for k in _RECORD_KEYS if k not in record]
    if missing:
        raise _NotAReport(f"no {', '.join(missing)}")
    case_id = record["case_id"]
    if not isinstance(case_id, str) or not case_id:
        raise _NotAReport(f"case_id is not a non-empty string: {case_id!r}")
    if not _is_file_name(record["segmentation"]):
        raise _NotAReport(f"segmentation is not a file name in the folder: {record['segmentation']!r}")
    overlay = record["overlay"]
    if overlay is not None and not _is_file_name(overlay):
        raise _NotAReport(f"overlay is neither null nor a file name in the folder: {overlay!r}")
    if not isinstance(record["regions"], dict):
        raise _NotAReport("regions is not an object")
    regions = {name: _region(name, value) for name, value in record["regions"].items()}
    return QcRow(
        case_id=case_id,
        record=record_name,
        segmentation=record["segmentation"],
        segmentation_exists=(folder / record["segmentation"]).is_file(),
        overlay=overlay,
        thumbnail=None if overlay is None else thumbnail_data_uri(folder / overlay),
        modalities_used=_string_list(record, "modalities_used"),
        modalities_missing=_string_list(record, "modalities_missing"),
        regions={name: regions[name] for name in REGION_NAMES if name in regions},
        flags=_flags(record["flags"]),
    )


def collect_qc_rows(folder: str | os.PathLike) -> QcRows:
    """Read every ``*.json`` of ``folder`` (hidden files aside) into the page's rows.

    Args:
        folder: the output folder of ``brats-cggm-infer --report``.

    Returns:
        The rows (flagged cases first, then by case id), the files skipped and the files unreadable, by name.

    Raises:
        NotADirectoryError: if ``folder`` is not a folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder}: not a folder")
    result = QcRows(folder)
    for path in sorted(p for p in folder.glob("*.json") if not p.name.startswith(".")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            result.unreadable.append((path.name, str(exc)))
            continue
        try:
            result.rows.append(qc_row(record, folder, path.name))
        except _NotAReport as exc:
            result.skipped.append((path.name, str(exc)))
    result.rows.sort(key=lambda row: (not row.flags, row.case_id))
    return result


_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; }
th, td { border: 1px solid #ccc; padding: 4px 8px; vertical-align: top; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
thead th { background: #f0f0f0; position: sticky; top: 0; }
thead th button { font: inherit; font-weight: bold; border: 0; background: none; cursor: pointer; padding: 0; }
th[aria-sort="ascending"] button::after { content: " \\25B2"; }
th[aria-sort="descending"] button::after { content: " \\25BC"; }
tr.flagged { background: #fff4e0; }
td.flags ul { margin: 0; padding-left: 1.2em; }
.flag { color: #a40; font-weight: bold; }
.missing { color: #a00; }
img { display: block; }
"""

# Sorts the table on a click of a header button: numbers numerically, text alphabetically; a second click on the
# same header reverses the order. Empty cells go last either way.
_SCRIPT = """
(function () {
  "use strict";
  var table = document.getElementById("cases");
  if (!table) { return; }
  var body = table.tBodies[0];
  var headers = table.tHead.rows[0].cells;
  function key(row, index, numeric) {
    var cell = row.cells[index];
    var value = cell.hasAttribute("data-sort") ? cell.getAttribute("data-sort") : cell.textContent.trim();
    if (value === "") { return null; }
    return numeric ? Number(value) : value;
  }
  function sortBy(index) {
    var header = headers[index];
    var numeric = header.getAttribute("data-type") === "number";
    var ascending = header.getAttribute("aria-sort") !== "ascending";
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a, index, numeric);
      var y = key(b, index, numeric);
      if (x === null || y === null) { return (x === null) - (y === null); }
      var order = numeric ? x - y : x.localeCompare(y);
      return ascending ? order : -order;
    });
    for (var i = 0; i < headers.length; i++) { headers[i].removeAttribute("aria-sort"); }
    header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    rows.forEach(function (row) { body.appendChild(row); });
  }
  Array.prototype.forEach.call(headers, function (header, index) {
    var button = header.querySelector("button");
    if (button) { button.addEventListener("click", function () { sortBy(index); }); }
  });
})();
"""

# No network, ever: only inline style and script, and pictures from data: URIs.
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _href(name: str) -> str:
    return _e(quote(name))


def _number_text(value: float) -> str:
    return f"{value:.2f}"


def _header(label: str, kind: str | None, title: str = "") -> str:
    title_attr = f' title="{_e(title)}"' if title else ""
    if kind is None:
        return f"<th{title_attr}>{_e(label)}</th>"
    return f'<th data-type="{kind}"{title_attr}><button type="button">{_e(label)}</button></th>'


def _row_html(row: QcRow, regions: Sequence[str]) -> str:
    cells = [f'<td class="flags" data-sort="{len(row.flags)}">{_flags_html(row.flags)}</td>']
    cells.append(f"<td>{_e(row.case_id)}</td>")
    if row.overlay is None:
        cells.append("<td>none</td>")
    elif row.thumbnail is None:
        cells.append(
            f'<td><a href="{_href(row.overlay)}">{_e(row.overlay)}</a> <span class="missing">(unreadable)</span></td>'
        )
    else:
        cells.append(
            f'<td><a href="{_href(row.overlay)}"><img src="{_e(row.thumbnail)}" alt="overlay of {_e(row.case_id)}">'
            "</a></td>"
        )
    cells.append(f"<td>{_e(', '.join(row.modalities_used))}</td>")
    cells.append(f'<td class="missing">{_e(", ".join(row.modalities_missing))}</td>')
    for name in regions:
        stats = row.regions.get(name)
        if stats is None:
            cells.append('<td class="number" data-sort=""></td><td class="number" data-sort=""></td>')
            continue
        largest = f"largest lesion {_number_text(stats.largest_lesion_ml)} ml"
        cells.append(
            f'<td class="number" data-sort="{stats.volume_ml!r}">{_number_text(stats.volume_ml)}</td>'
            f'<td class="number" data-sort="{stats.lesions}" title="{_e(largest)}">{stats.lesions}</td>'
        )
    if row.segmentation_exists:
        cells.append(f'<td><a href="{_href(row.segmentation)}">{_e(row.segmentation)}</a></td>')
    else:
        cells.append(f'<td>{_e(row.segmentation)} <span class="missing">(missing)</span></td>')
    flagged = ' class="flagged"' if row.flags else ""
    return f'<tr{flagged} data-case="{_e(row.case_id)}">' + "".join(cells) + "</tr>"


def _flags_html(flags: Sequence[tuple[str, str]]) -> str:
    if not flags:
        return "0"
    items = "".join(f'<li><span class="flag">{_e(name)}</span>: {_e(message)}</li>' for name, message in flags)
    return f"{len(flags)}<ul>{items}</ul>"


def _file_list(title: str, section_id: str, entries: Sequence[tuple[str, str]]) -> str:
    if not entries:
        return ""
    items = "".join(f"<li><code>{_e(name)}</code>: {_e(reason)}</li>" for name, reason in entries)
    return f'<section id="{section_id}"><h2>{_e(title)} ({len(entries)})</h2><ul>{items}</ul></section>'


def render_qc_page(rows: QcRows) -> str:
    """The QC page of ``rows`` as one HTML document; every text taken from the files is escaped.

    Args:
        rows: what :func:`collect_qc_rows` read.

    Returns:
        The document: a summary, the table of cases (sortable by a click on a header), the files skipped
        and those unreadable.
    """
    regions = rows.regions
    headers = [
        _header("Flags", "number", "number of QC flags"),
        _header("Case", "text"),
        _header("Overlay", None),
        _header("Sequences used", "text"),
        _header("Missing", "text", "sequences the case lacked"),
    ]
    for name in regions:
        headers.append(_header(f"{name} ml", "number", f"{name} volume in millilitres"))
        headers.append(_header(f"{name} lesions", "number", f"{name} connected components"))
    headers.append(_header("Label map", "text"))
    flagged = sum(1 for row in rows.rows if row.flags)
    summary = f"{len(rows.rows)} case(s), {flagged} flagged"
    if rows.skipped:
        summary += f"; {len(rows.skipped)} file(s) skipped"
    if rows.unreadable:
        summary += f"; {len(rows.unreadable)} file(s) unreadable"
    body = "\n".join(_row_html(row, regions) for row in rows.rows)
    title = f"QC: {rows.folder.resolve().name}"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n'
        '<link rel="icon" href="data:,">\n'
        f"<title>{_e(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        f"<h1>{_e(title)}</h1>\n"
        f'<p id="summary">{_e(summary)}. Flagged cases first; click a header to sort, again to reverse. '
        "Volumes in ml; a thumbnail opens the full overlay.</p>\n"
        f'<table id="cases">\n<thead><tr>{"".join(headers)}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>\n'
        f"{_file_list('Unreadable files', 'unreadable', rows.unreadable)}\n"
        f"{_file_list('Skipped files', 'skipped', rows.skipped)}\n"
        f"<script>{_SCRIPT}</script>\n</body>\n</html>\n"
    )


def save_qc_page(text: str, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write the page atomically; without ``overwrite`` an existing file is never replaced.

    Args:
        text: the HTML document.
        path: the file (the folder's :data:`QC_PAGE_NAME`).
        overwrite: replace an existing file.

    Returns:
        ``path``.

    Raises:
        FileExistsError: if ``path`` exists (or appears while writing) and ``overwrite`` is False.
    """
    return save_new_file(path, text, overwrite)


def write_qc_page(folder: str | os.PathLike, overwrite: bool = False) -> Path:
    """Build ``folder/index.html`` from the case reports in ``folder``.

    Args:
        folder: the output folder of ``brats-cggm-infer --report``.
        overwrite: replace an existing page.

    Returns:
        The page's path.

    Raises:
        FileExistsError: if the page exists and ``overwrite`` is False (checked before reading anything).
        NotADirectoryError: if ``folder`` is not a folder.
    """
    path = Path(folder) / QC_PAGE_NAME
    refuse_existing([path], overwrite)
    return save_qc_page(render_qc_page(collect_qc_rows(folder)), path, overwrite)
