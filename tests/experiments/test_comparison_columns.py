"""The comparison's columns: the balancer activity of a run (docs/methods.md §0.3) becomes ``activity/...`` columns."""

from __future__ import annotations

from brats_cggm.experiments.comparison_columns import activity_columns, activity_key


def test_activity_columns_from_a_metrics_row():
    row = {"validation": {"val/dice/mean": 0.5}, "activity": {"cggm/B/flair/mean": 0.7, "cggm/neutral": 0.25}}
    assert activity_columns(row) == {"activity/cggm/B/flair/mean": 0.7, "activity/cggm/neutral": 0.25}
    assert activity_key("opm/executed") == "activity/opm/executed"


def test_a_row_without_activity_has_no_activity_columns():
    assert activity_columns({"validation": {"val/dice/mean": 0.5}}) == {}
