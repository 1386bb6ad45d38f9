"""MultimodalSplits and its report for metrics.json; the on_invalid contract shared by the loaders."""

from __future__ import annotations

import json

import pytest

from brats_cggm.adapters.data import MultimodalSplits, drop_or_raise
from brats_cggm.adapters.errors import AdapterDataError


def test_data_report_counts_and_stringifies():
    splits = MultimodalSplits([1, 2, 3], [4], [5, 6], ("a",), {"a": 2}, 1, info={"dropped": {"train": 1}})
    splits.info["files"] = lambda: ["x.jpg"]
    report = splits.report()
    assert report["sizes"] == {"train": 3, "val": 1, "test": 2}
    assert report["dropped"] == {"train": 1} and report["files"] == ["x.jpg"]
    json.dumps(report)


def test_invalid_samples_raise_or_are_counted_per_split_with_a_warning():
    with pytest.raises(AdapterDataError, match=r"x\.pkl: 2 bad; pass on_invalid='drop'"):
        drop_or_raise("x.pkl: 2 bad", "error", {}, "train", 2)
    dropped = {"train": 1}
    with pytest.warns(UserWarning, match="x.pkl: 2 bad; dropped"):
        drop_or_raise("x.pkl: 2 bad", "drop", dropped, "train", 2)
    assert dropped == {"train": 3}
