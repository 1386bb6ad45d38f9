"""The comparison's tests against the baseline, from hand-made rows."""

from __future__ import annotations

import json

import pytest

from brats_cggm.core.stats import holm_adjust, paired_comparison
from brats_cggm.experiments.comparison_statistics import (
    comparison_tests,
    criterion_text,
    held_out_key,
    statistics_markdown,
    statistics_metadata,
)


def _row(method: str, seed: int, **validation: float) -> dict:
    return {"method": method, "seed": seed, "validation": {k.replace("__", "/"): v for k, v in validation.items()}}


ROWS = [
    *(_row("joint", s, val__dice__mean=0.5 + 0.1 * s, robustness__mean_subsets=0.3) for s in range(3)),
    *(_row("cggm", s, val__dice__mean=0.5 + 0.1 * s + g, robustness__mean_subsets=0.3 + g) for s, g in
      enumerate((0.01, 0.03, 0.02))),
    *(_row("opm", s, val__dice__mean=0.5 + 0.1 * s - g) for s, g in enumerate((0.05, 0.07, 0.06))),
]  # fmt: skip


def test_held_out_columns() -> None:
    assert held_out_key("val/dice/mean") == "test/dice/mean"
    assert held_out_key("robustness/mean_subsets") == "test/robustness/mean_subsets"


def test_every_method_and_metric_holm_adjusted_across_the_family() -> None:
    family = ["val/dice/mean", "robustness/mean_subsets"]
    tests = comparison_tests(ROWS, {"cggm": "joint", "opm": "joint"}, family, margin=0.01)
    assert [(t["method"], t["metric"]) for t in tests] == [
        ("cggm", "val/dice/mean"),
        ("opm", "val/dice/mean"),
        ("cggm", "robustness/mean_subsets"),
        ("opm", "robustness/mean_subsets"),
    ]
    raw = [t["p"] for t in tests]
    assert raw[0] == pytest.approx(paired_comparison({0: 0.51, 1: 0.63, 2: 0.72}, {0: 0.5, 1: 0.6, 2: 0.7}, 0.01)["p"])
    assert tests[3]["n"] == 0 and raw[3] is None  # opm has no robustness column: no test, still in the family
    assert [t["p_holm"] for t in tests] == pytest.approx(holm_adjust(raw))
    assert all(t["significant"] == (t["p_holm"] is not None and t["p_holm"] < 0.05) for t in tests)
    assert tests[1]["mean"] == pytest.approx(-0.06) and tests[1]["significant"]  # −0.06 ± 0.01 at n = 3
    assert all(t["source"] == "validation" for t in tests)
    metadata = statistics_metadata(tests, family, 0.01, 0.05)
    assert metadata["family"] == family and metadata["equivalence"]["margin"] == 0.01
    assert json.loads(json.dumps(metadata)) == metadata  # no NaN
    table = statistics_markdown(tests)
    assert "| opm | joint | robustness/mean_subsets (validation) | 0 | — | — | — | — | — | — |" in table
    assert "(m = 4 tests)" in criterion_text(family, 0.01, 0.05, len(tests))


def test_the_held_out_columns_are_read_when_present() -> None:
    rows = [
        {**r, "validation": {**r["validation"], "test/dice/mean": r["validation"]["val/dice/mean"] - 0.1}} for r in ROWS
    ]
    (test,) = comparison_tests(rows, {"cggm": "joint"}, ["val/dice/mean"])
    assert test["source"] == "test" and test["column"] == "test/dice/mean"
    assert test["differences"] == pytest.approx([0.01, 0.03, 0.02])
