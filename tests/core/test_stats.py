"""``brats_cggm.core.stats``: the one mean ± std summary, for one run and several."""

from __future__ import annotations

import json

import numpy as np
import pytest

from brats_cggm.core.stats import format_mean_std, mean_std


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
