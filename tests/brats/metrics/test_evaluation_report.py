"""Writing an evaluation: the summary JSON without NaN, the markdown table."""

from __future__ import annotations

from pathlib import Path

import pytest

from brats_cggm.brats.metrics.case_scores import (
    ChallengeOptions,
)
from brats_cggm.brats.metrics.evaluation import evaluate_cases, summarize
from brats_cggm.brats.metrics.evaluation_report import summary_markdown, write_results
from brats_cggm.brats.metrics.pairing import evaluate_folders


def test_results_json_has_null_for_nan(folders: tuple[Path, Path], tmp_path: Path):
    import json

    result = evaluate_folders(*folders, convention="auto", options=ChallengeOptions())
    summary = write_results(result, tmp_path / "r.csv", tmp_path / "r.json", markdown_path=tmp_path / "r.md")
    text = (tmp_path / "r.json").read_text()
    written = json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in the summary JSON"))
    assert written["metrics"]["all_instance_prec_et"]["n"] == summary["metrics"]["all_instance_prec_et"]["n"] == 2
    legacy = summarize(evaluate_folders(*folders))
    with pytest.raises(ValueError, match="challenge metrics"):
        summary_markdown(legacy)
    pair = {"A": (str(folders[0] / "A.nii.gz"), str(folders[1] / "A" / "A_seg.nii.gz"))}
    assert "'auto' needs the challenge metrics" in evaluate_cases(pair, "auto").rows[0]["error"]
