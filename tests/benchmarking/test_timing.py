"""Step timing: paired ratios."""

from __future__ import annotations

import pytest

from brats_cggm.benchmarking.timing import paired_ratio, summarize


def test_paired_ratio_is_the_median_of_per_round_ratios():
    # rounds of 2 steps: ratios 2.0, 1.0, 3.0 -> median 2.0; the incomplete last round is left out
    assert paired_ratio([2, 2, 1, 1, 9, 9, 5], [1, 1, 1, 1, 3, 3], block=2) == pytest.approx(2.0)
    assert paired_ratio([1.0], [], block=1) is None


def test_summary_keeps_the_median_and_every_step():
    assert summarize([0.3, 0.1, 0.2]) == {"step_time_s": 0.2, "step_times_s": [0.3, 0.1, 0.2]}
