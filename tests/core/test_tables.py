"""``brats_cggm.core.tables``: the one CSV and markdown table writer."""

from __future__ import annotations

import csv
import io

import pytest

from brats_cggm.core.tables import csv_text, markdown_table


def test_csv_text_round_trips_and_keeps_the_line_end() -> None:
    text = csv_text(["case", "dice"], [["a,b", 0.5], ["c", None]])
    assert text == 'case,dice\n"a,b",0.5\nc,\n'
    assert list(csv.reader(io.StringIO(text))) == [["case", "dice"], ["a,b", "0.5"], ["c", ""]]
    assert csv_text(["x"], [[1]], line_end="\r\n") == "x\r\n1\r\n"


def test_markdown_table_aligns_per_column() -> None:
    assert markdown_table(["m", "φ"], [["flair", "+0.100"]], ["left", "right"]) == (
        "| m | φ |\n|---|---:|\n| flair | +0.100 |"
    )
    assert markdown_table(["a", "b"], [[1, 2]]) == "| a | b |\n|---|---|\n| 1 | 2 |"
    with pytest.raises(ValueError, match="2 columns"):
        markdown_table(["a", "b"], [[1]])
    with pytest.raises(ValueError, match="align"):
        markdown_table(["a"], [], "centre")
