"""``brats_cggm.core.stats``: the mean ± std summary, and the paired tests against scipy and hand-computed values."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from brats_cggm.core.stats import (
    EQUIVALENT,
    NOT_SHOWN_EQUIVALENT,
    format_mean_std,
    holm_adjust,
    mean_std,
    paired_comparison,
    paired_differences,
    paired_t_test,
    tost_paired,
)


def test_several_values_give_the_sample_std() -> None:
    stats = mean_std([0.2, 0.4, 0.9])
    assert stats["mean"] == pytest.approx(0.5) and stats["n"] == 3
    assert stats["std"] == pytest.approx(np.std([0.2, 0.4, 0.9], ddof=1))
    assert format_mean_std(stats) == "0.500 ± 0.361"


def test_one_value_has_no_std_and_prints_without_spread() -> None:
    stats = mean_std([0.9])
    assert stats == {"mean": 0.9, "std": None, "n": 1}
    assert json.loads(json.dumps(stats)) == stats  # JSON-ready: no NaN
    assert format_mean_std(stats) == "0.900"
    assert format_mean_std(mean_std([0.12]), signed=True) == "+0.120"
    assert format_mean_std(mean_std([-0.1, 0.1]), digits=2, signed=True) == "+0.00 ± 0.14"


def test_no_value_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one value"):
        mean_std([])


METHOD = {0: 0.71, 1: 0.68, 2: 0.74, 3: 0.70}
BASELINE = {0: 0.70, 1: 0.66, 2: 0.70, 4: 0.5}  # seed 3 and 4: one side only


def test_paired_differences_keep_the_common_seeds() -> None:
    differences = paired_differences(METHOD, BASELINE)
    assert list(differences) == [0, 1, 2]
    assert list(differences.values()) == pytest.approx([0.01, 0.02, 0.04])


def test_paired_t_test_matches_scipy_and_the_hand_computed_interval() -> None:
    scipy_stats = pytest.importorskip("scipy.stats")
    d = [0.01, 0.02, 0.04]
    result = paired_t_test(d)
    reference = scipy_stats.ttest_rel([0.71, 0.68, 0.74], [0.70, 0.66, 0.70])
    assert result["t"] == pytest.approx(reference.statistic) and result["p"] == pytest.approx(reference.pvalue)
    # by hand: mean 7/300, s = sqrt(((−1/300)² + ... )/2) = 0.015275, t_{0.975, 2} = 4.302653
    s = math.sqrt(sum((x - 0.07 / 3) ** 2 for x in d) / 2)
    half = 4.302652729911275 * s / math.sqrt(3)
    assert result["mean"] == pytest.approx(0.07 / 3) and result["std"] == pytest.approx(s)
    assert result["ci"] == pytest.approx([0.07 / 3 - half, 0.07 / 3 + half])
    assert result["df"] == 2 and result["note"] is None
    narrower = paired_t_test(d, confidence=0.9)["ci"]
    assert narrower[0] > result["ci"][0] and narrower[1] < result["ci"][1]


def test_too_few_runs_or_no_spread_give_no_test_and_say_so() -> None:
    for d in ([], [0.02]):
        result = paired_t_test(d)
        assert result["p"] is None and result["ci"] is None and "< 2: no test" in result["note"]
        tost = tost_paired(d, 0.01)
        assert tost["p"] is None and tost["verdict"] == NOT_SHOWN_EQUIVALENT and "no test" in tost["note"]
    assert paired_t_test([0.02])["mean"] == 0.02 and paired_t_test([])["mean"] is None
    flat = paired_t_test([0.0, 0.0, 0.0])
    assert flat["p"] is None and flat["std"] == 0.0 and "zero variance" in flat["note"]
    assert tost_paired([0.0, 0.0], 0.01)["verdict"] == NOT_SHOWN_EQUIVALENT
    assert json.loads(json.dumps(flat)) == flat  # no NaN, no infinity
    with pytest.raises(ValueError, match="confidence"):
        paired_t_test([0.1, 0.2], confidence=1.0)


def test_tost_is_two_one_sided_scipy_tests() -> None:
    scipy_stats = pytest.importorskip("scipy.stats")
    d = [0.002, -0.003, 0.001, 0.0, -0.001]
    result = tost_paired(d, margin=0.01)
    lower = scipy_stats.ttest_1samp(d, -0.01, alternative="greater").pvalue
    upper = scipy_stats.ttest_1samp(d, 0.01, alternative="less").pvalue
    assert result["p_lower"] == pytest.approx(lower) and result["p_upper"] == pytest.approx(upper)
    assert result["p"] == pytest.approx(max(lower, upper)) and result["p"] < 0.05
    assert result["verdict"] == EQUIVALENT and result["margin"] == 0.01
    # the same differences, a margin they do not fit in
    assert tost_paired(d, margin=0.001)["verdict"] == NOT_SHOWN_EQUIVALENT
    # three seeds with a 0.02 spread cannot show equivalence within ±0.01
    assert tost_paired([0.01, 0.02, 0.04], 0.01)["verdict"] == NOT_SHOWN_EQUIVALENT
    with pytest.raises(ValueError, match="positive"):
        tost_paired(d, margin=0.0)


def test_holm_adjustment_by_hand() -> None:
    # sorted 0.01, 0.02, 0.03, 0.04 (m = 4): 4·0.01 = 0.04, 3·0.02 = 0.06, 2·0.03 = 0.06, 1·0.04 → max 0.06
    assert holm_adjust([0.03, 0.01, 0.04, 0.02]) == pytest.approx([0.06, 0.04, 0.06, 0.06])
    # monotone and capped at 1
    assert holm_adjust([0.5, 0.001]) == pytest.approx([0.5, 0.002])
    assert holm_adjust([0.9, 0.6]) == pytest.approx([1.0, 1.0])
    # a test not run counts in m as p = 1 and has no adjusted p-value
    assert holm_adjust([0.01, None, 0.02]) == pytest.approx([0.03, None, 0.04])
    assert holm_adjust([]) == []


def test_paired_comparison_gathers_the_differences_the_test_and_tost() -> None:
    result = paired_comparison(METHOD, BASELINE, margin=0.01)
    assert result["seeds"] == [0, 1, 2] and result["n"] == 3
    assert result["differences"] == pytest.approx([0.01, 0.02, 0.04])
    assert result["p"] == pytest.approx(paired_t_test([0.01, 0.02, 0.04])["p"])
    assert result["tost"]["verdict"] == NOT_SHOWN_EQUIVALENT
