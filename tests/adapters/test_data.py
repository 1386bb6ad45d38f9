"""MultimodalSplits: what a task's loader returns, and its report for metrics.json."""

from __future__ import annotations

import json

from brats_cggm.adapters.data import MultimodalSplits


def test_data_report_counts_and_stringifies():
    splits = MultimodalSplits([1, 2, 3], [4], [5, 6], ("a",), {"a": 2}, 1, info={"dropped": {"train": 1}})
    splits.info["files"] = lambda: ["x.jpg"]
    report = splits.report()
    assert report["sizes"] == {"train": 3, "val": 1, "test": 2}
    assert report["dropped"] == {"train": 1} and report["files"] == ["x.jpg"]
    json.dumps(report)
