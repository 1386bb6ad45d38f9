"""Report tables as text: CSV and markdown, the one writer of each (files go through :mod:`brats_cggm.core.files`)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = [
    "csv_text",
    "markdown_table",
]


def csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]], line_end: str = "\n") -> str:
    """A CSV document: the header line, then one line per row (``None`` as an empty cell).

    Args:
        header: the column names.
        rows: the rows, each a value per column.
        line_end: the line terminator (``"\\r\\n"`` is the csv module's own).

    Returns:
        The text, ending with ``line_end``.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator=line_end)
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]], align: str | Sequence[str] = "left") -> str:
    """A markdown table.

    Args:
        header: the column titles.
        rows: the rows, each a cell per column (written with ``str``).
        align: ``"left"`` or ``"right"`` for every column, or one of them per column.

    Returns:
        The table's lines joined by newlines, without a final newline.

    Raises:
        ValueError: an unknown alignment, or a row or ``align`` of another length than ``header``.
    """
    aligns = [align] * len(header) if isinstance(align, str) else list(align)
    if len(aligns) != len(header) or any(a not in ("left", "right") for a in aligns):
        raise ValueError(f"align must be 'left' or 'right', once or per column ({len(header)}), got {align!r}")
    lines = ["| " + " | ".join(header) + " |", "|" + "".join("---:|" if a == "right" else "---|" for a in aligns)]
    for row in rows:
        cells = [str(cell) for cell in row]
        if len(cells) != len(header):
            raise ValueError(f"a row of {len(cells)} cells in a table of {len(header)} columns: {cells}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
