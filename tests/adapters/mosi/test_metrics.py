"""MOSI metrics against hand-computed values on fixed predictions."""

from __future__ import annotations

import numpy as np
import pytest

from brats_cggm.adapters.mosi import mosi_metrics


def test_mosi_metrics_hand_computed():
    truth = np.array([2.0, -1.0, 0.0, 0.4, -2.6, 3.0])
    preds = np.array([1.4, 0.5, -0.2, 0.6, -3.4, 2.5])
    m = mosi_metrics(preds, truth)
    # non-zero truth: indices 0,1,3,4,5 -> truth>0 [T,F,T,F,T], pred>0 [T,T,T,F,T] -> 4/5 right
    assert m["acc2"] == pytest.approx(0.8)
    # has0: truth>=0 [T,F,T,T,F,T], pred>=0 [T,T,F,T,F,T] -> 4/6
    assert m["acc2_has0"] == pytest.approx(4 / 6)
    # rounded+clipped: truth [2,-1,0,0,-3,3], preds [1,0,-0,1,-3,2] -> equal at 2 (0 == -0), 4 -> 2/6
    assert m["acc7"] == pytest.approx(2 / 6)
    assert m["mae"] == pytest.approx(np.mean([0.6, 1.5, 0.2, 0.2, 0.8, 0.5]))
    assert m["corr"] == pytest.approx(np.corrcoef(preds, truth)[0, 1])
    # F1 non-zero: classes True (support 3): tp 3, fp 1, fn 0 -> 6/7; False (support 2): tp 1, fp 0, fn 1 -> 2/3
    assert m["f1"] == pytest.approx((3 * 6 / 7 + 2 * 2 / 3) / 5)
    # F1 has0: True (support 4): tp 3, fp 1, fn 1 -> 0.75; False (support 2): tp 1, fp 1, fn 1 -> 0.5
    assert m["f1_has0"] == pytest.approx((4 * 0.75 + 2 * 0.5) / 6)
