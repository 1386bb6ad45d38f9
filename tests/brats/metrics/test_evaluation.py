"""Evaluating pairs of label files: bad cases reported, missing sides."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from brats_cggm.brats.metrics.evaluation import evaluate_cases
from brats_cggm.brats.metrics.pairing import evaluate_folders
from tests.helpers.segmentation_folders import SHAPE, save_labels


def test_bad_cases_are_reported_not_dropped(tmp_path: Path):
    good = np.zeros(SHAPE, np.uint8)
    good[2, 2, 2] = 2
    save_labels(tmp_path / "ref" / "bad_labels.nii.gz", good)
    save_labels(tmp_path / "pred" / "bad_labels.nii.gz", np.where(good > 0, 3, 0))  # 3 is not a BraTS 2021 label
    save_labels(tmp_path / "ref" / "bad_shape.nii.gz", good)
    save_labels(tmp_path / "pred" / "bad_shape.nii.gz", good[:-1])
    (tmp_path / "pred" / "corrupt.nii.gz").write_bytes(b"garbage")
    save_labels(tmp_path / "ref" / "corrupt.nii.gz", good)
    result = evaluate_folders(tmp_path / "pred", tmp_path / "ref")
    errors = {r["case_id"]: r["error"] for r in result.rows}
    assert result.ids("error") == ["bad_labels", "bad_shape", "corrupt"]
    assert "unexpected label values [3]" in errors["bad_labels"]
    assert "spatial shape (9, 10, 10) differs" in errors["bad_shape"]
    assert errors["corrupt"].startswith(str(tmp_path / "pred" / "corrupt.nii.gz"))


def test_evaluate_cases_missing_sides():
    result = evaluate_cases({"a": (None, "r.nii.gz"), "b": ("p.nii.gz", None)})
    assert result.ids("missing_prediction") == ["a"] and result.ids("missing_reference") == ["b"]
