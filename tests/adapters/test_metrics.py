"""Accuracy and F1 against hand-computed values on fixed predictions."""

from __future__ import annotations

import numpy as np
import pytest

from brats_cggm.adapters.metrics import accuracy, f1_score


def test_f1_and_accuracy_hand_computed():
    target = np.array([0, 0, 1, 1, 2, 2, 2])
    pred = np.array([0, 1, 1, 1, 2, 0, 2])
    assert accuracy(pred, target) == pytest.approx(5 / 7)
    # class 0: tp1 fp1 fn1 -> 0.5; class 1: tp2 fp1 fn0 -> 0.8; class 2: tp2 fp0 fn1 -> 0.8
    assert f1_score(pred, target, "macro") == pytest.approx((0.5 + 0.8 + 0.8) / 3)
    assert f1_score(pred, target, "weighted") == pytest.approx((2 * 0.5 + 2 * 0.8 + 3 * 0.8) / 7)


def test_empty_inputs_score_zero_and_unknown_averages_are_refused():
    empty = np.array([], dtype=np.int64)
    assert accuracy(empty, empty) == 0.0 and f1_score(empty, empty, "macro") == 0.0
    with pytest.raises(ValueError, match="average"):
        f1_score(np.array([0, 1]), np.array([0, 1]), "micro")
