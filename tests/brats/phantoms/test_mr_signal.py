"""MR tissue physics of the anatomical phantoms: the signal equations by hand, the clinical contrasts."""

from __future__ import annotations

import math

import pytest

from brats_cggm.brats.phantoms.geometric import MODALITIES
from brats_cggm.brats.phantoms.mr_signal import (
    SEQUENCE_PROTOCOLS,
    TISSUE_RELAXATION_3T,
    SequenceProtocol,
    signal_intensity,
    tissue_contrast_table,
)


def test_signal_equations_by_hand() -> None:
    se = SequenceProtocol("se", tr_ms=1000.0, te_ms=100.0)
    assert signal_intensity(se, 1.0, 1000.0, 100.0) == pytest.approx((1 - math.exp(-1)) * math.exp(-1))
    # At 90 degrees a spoiled gradient echo is a saturation recovery: PD (1 - E1) exp(-TE/T2).
    gre = SequenceProtocol("gre", tr_ms=500.0, te_ms=0.0, flip_deg=90.0)
    assert signal_intensity(gre, 0.5, 1000.0, 80.0) == pytest.approx(0.5 * (1 - math.exp(-0.5)))
    ir = SequenceProtocol("ir", tr_ms=10000.0, te_ms=0.0, ti_ms=1000.0)
    assert signal_intensity(ir, 1.0, 1000.0, 50.0) == pytest.approx(abs(1 - 2 * math.exp(-1) + math.exp(-10)))
    # FLAIR's default inversion time nulls CSF.
    csf = TISSUE_RELAXATION_3T["csf"]
    flair = SEQUENCE_PROTOCOLS["flair"]
    assert signal_intensity(flair, 1.0, csf.t1_ms, csf.t2_ms) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="unknown sequence kind 'fse'"):
        signal_intensity(SequenceProtocol("fse", 1.0, 1.0), 1.0, 1.0, 1.0)


def test_contrast_table_is_the_clinical_appearance() -> None:
    c = tissue_contrast_table()
    assert set(c) == set(MODALITIES)
    # Normal tissue: WM brighter than GM brighter than CSF on T1-weighted; the reverse on T2; CSF dark on FLAIR.
    for m in ("t1", "t1ce"):
        assert c[m]["wm"] == 1.0 > c[m]["gm"] > c[m]["csf"]
    assert c["t2"]["csf"] > c["t2"]["gm"] > c["t2"]["wm"]
    assert c["flair"]["csf"] < 0.05 and c["flair"]["gm"] > c["flair"]["wm"]
    # FLAIR: edema the brightest; necrosis and enhancing rim alike.
    assert c["flair"]["edema"] > max(c["flair"][t] for t in ("wm", "gm", "csf", "enhancing", "necrosis"))
    assert abs(c["flair"]["necrosis"] - c["flair"]["enhancing"]) < 0.15
    # T2: edema bright but closer to CSF than on FLAIR (relative to the edema-WM contrast).
    t2_gap = (c["t2"]["csf"] - c["t2"]["edema"]) / (c["t2"]["edema"] - c["t2"]["wm"])
    flair_gap = (c["flair"]["edema"] - c["flair"]["csf"]) / (c["flair"]["edema"] - c["flair"]["wm"])
    assert t2_gap < flair_gap
    # T1ce: only the enhancing tumour changes, strongly; edema close to grey matter.
    assert c["t1ce"]["enhancing"] > 1.5 > 1.0 > c["t1"]["enhancing"]
    assert {t: c["t1"][t] for t in c["t1"] if t != "enhancing"} == {
        t: c["t1ce"][t] for t in c["t1"] if t != "enhancing"
    }
    assert abs(c["t1ce"]["edema"] - c["t1ce"]["gm"]) < 0.1
    # T1: necrosis hypointense to every solid tissue.
    assert c["t1"]["necrosis"] < min(c["t1"][t] for t in ("wm", "gm", "edema", "enhancing"))
