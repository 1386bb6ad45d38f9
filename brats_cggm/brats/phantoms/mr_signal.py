"""MR tissue physics of the anatomical phantoms: relaxation times at 3 T, the BraTS sequences, their signal equations.

See :mod:`brats_cggm.brats.phantoms.anatomical` for how the phantoms use them, and its references for the values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from brats_cggm.brats.phantoms.geometric import MODALITIES

__all__ = [
    "GADOLINIUM_CONCENTRATION_MM",
    "GADOLINIUM_R1_PER_MM_MS",
    "MISMATCH_RELAXATION_3T",
    "SEQUENCE_PROTOCOLS",
    "TISSUE_RELAXATION_3T",
    "Relaxation",
    "SequenceProtocol",
    "signal_intensity",
    "tissue_contrast_table",
]


@dataclass(frozen=True)
class Relaxation:
    """MR properties of a tissue: relative proton density and relaxation times (ms)."""

    proton_density: float
    t1_ms: float
    t2_ms: float


#: Tissue properties at 3 T. WM and GM T1/T2: Stanisz et al. 2005 (frontal WM 1084/69 ms, caudate-level GM
#: 1820/99 ms); proton densities relative to CSF: BrainWeb (Kwan et al. 1999: WM 0.77, GM 0.86, CSF 1).
#: CSF: round values in the reported 3 T range (T1 about 4.3 s, T2 about 2 s). The tumour compartments are
#: approximations, not measurements: longer T1 and T2 than WM (more free water), edema the most T2-prolonged
#: of the solid-tissue compartments, necrosis fluid-like but protein-rich (not nulled by FLAIR), chosen within
#: the ranges reported for peritumoral edema and glioblastoma so that the images show the textbook appearance.
#: Haemorrhage inside the necrotic core is subacute (extracellular methaemoglobin): short T1 and long T2, bright on
#: T1 before contrast (Bradley W. G., "MR appearance of hemorrhage in the brain", Radiology 189, 15-26 (1993));
#: on T1ce alone it mimics enhancement, which only the native T1 tells apart.
TISSUE_RELAXATION_3T: dict[str, Relaxation] = {
    "wm": Relaxation(0.77, 1084.0, 69.0),
    "gm": Relaxation(0.86, 1820.0, 99.0),
    "csf": Relaxation(1.00, 4300.0, 2000.0),
    "edema": Relaxation(0.88, 1800.0, 190.0),
    "enhancing": Relaxation(0.85, 1700.0, 130.0),
    "necrosis": Relaxation(0.90, 2400.0, 250.0),
    "haemorrhage": Relaxation(0.85, 600.0, 160.0),
}


#: The infiltrated outer edema of the ``t2-flair-mismatch`` phantom variant (a positive control, not a measured
#: tissue): a fluid-rich tissue whose long T1 brings it near the FLAIR inversion null, so that it is about as bright
#: as white matter on FLAIR (1.03 x WM) while bright on T2 (3.09 x WM), the "T2-FLAIR mismatch" sign of some
#: gliomas (Patel S. H. et al., "T2-FLAIR mismatch, an imaging biomarker for IDH and 1p/19q status in lower-grade
#: gliomas", Clin. Cancer Res. 23, 6078-6085 (2017)). Kept out of :data:`TISSUE_RELAXATION_3T`, whose tissues every
#: default phantom draws.
MISMATCH_RELAXATION_3T = Relaxation(0.95, 3000.0, 300.0)


#: Gadopentetate T1 relaxivity at 3 T in plasma, about 3.7 L mmol^-1 s^-1 (Rohrer et al. 2005), per ms.
GADOLINIUM_R1_PER_MM_MS = 3.7e-3


#: Gadolinium concentration in enhancing tumour (mmol/L); an assumption of the order of a standard dose's
#: tissue concentration. Blood-brain barrier intact elsewhere: no enhancement of normal tissue, edema or necrosis.
GADOLINIUM_CONCENTRATION_MM = 0.3


@dataclass(frozen=True)
class SequenceProtocol:
    """An MR sequence: its signal equation, timing and the acquisition geometry of a BraTS-like protocol.

    Attributes:
        kind: ``"gre"`` (spoiled gradient echo), ``"se"`` (spin echo) or ``"ir"`` (inversion recovery spin echo).
        tr_ms: repetition time.
        te_ms: echo time.
        flip_deg: flip angle (``"gre"`` only).
        ti_ms: inversion time (``"ir"`` only); None nulls CSF (:func:`signal_intensity`).
        contrast: gadolinium is given (T1ce).
        slice_mm: range of the axial slice thickness, drawn per case.
        in_plane_fwhm_mm: in-plane blur.
        noise: Rician noise sigma as a fraction of the white-matter signal.
        max_shift_mm: largest misregistration shift per axis.
        max_rotation_deg: largest misregistration rotation per axis.
    """

    kind: str
    tr_ms: float
    te_ms: float
    flip_deg: float = 90.0
    ti_ms: float | None = None
    contrast: bool = False
    slice_mm: tuple[float, float] = (1.0, 1.0)
    in_plane_fwhm_mm: float = 1.0
    noise: float = 0.03
    max_shift_mm: float = 1.0
    max_rotation_deg: float = 1.0


#: The four BraTS sequences. Slice thickness ranges follow the BraTS protocols (Menze et al. 2015: T1 2-D with
#: 1-6 mm slices, T1ce 3-D 1 mm, T2 and FLAIR 2-D with 2-6 mm slices; narrowed to typical values). T1ce is the
#: label reference (BraTS annotations are drawn on T1ce and FLAIR): the smallest misregistration.
SEQUENCE_PROTOCOLS: dict[str, SequenceProtocol] = {
    "flair": SequenceProtocol("ir", tr_ms=9000.0, te_ms=120.0, slice_mm=(3.0, 6.0), in_plane_fwhm_mm=1.3, noise=0.04),
    "t1": SequenceProtocol("gre", tr_ms=20.0, te_ms=4.0, flip_deg=25.0, slice_mm=(1.5, 5.0), in_plane_fwhm_mm=1.2),
    "t1ce": SequenceProtocol(
        "gre",
        tr_ms=20.0,
        te_ms=4.0,
        flip_deg=25.0,
        contrast=True,
        in_plane_fwhm_mm=1.0,
        max_shift_mm=0.3,
        max_rotation_deg=0.3,
    ),
    "t2": SequenceProtocol("se", tr_ms=5000.0, te_ms=100.0, slice_mm=(3.0, 6.0), in_plane_fwhm_mm=1.2, noise=0.035),
}


def signal_intensity(
    protocol: SequenceProtocol,
    proton_density: float | np.floating | np.ndarray,
    t1_ms: float | np.floating | np.ndarray,
    t2_ms: float | np.floating | np.ndarray,
) -> float | np.floating | np.ndarray:
    """The steady-state signal of a tissue for a sequence (textbook signal equations, e.g. Haacke et al. 1999).

    - ``gre``: ``PD sin(a) (1 - E1) / (1 - cos(a) E1) exp(-TE/T2)``, ``E1 = exp(-TR/T1)`` (spoiled gradient echo,
      T2* approximated by T2).
    - ``se``: ``PD (1 - exp(-TR/T1)) exp(-TE/T2)`` (TE << TR).
    - ``ir``: ``PD |1 - 2 exp(-TI/T1) + exp(-TR/T1)| exp(-TE/T2)``; ``TI = T1_CSF ln(2 / (1 + exp(-TR/T1_CSF)))``
      when ``protocol.ti_ms`` is None, the inversion time that nulls CSF (FLAIR).

    Args:
        protocol: the sequence.
        proton_density: relative proton density.
        t1_ms: T1 relaxation time (ms).
        t2_ms: T2 relaxation time (ms).

    Returns:
        The signal, in units of proton density (broadcast over array inputs).

    Raises:
        ValueError: for an unknown ``protocol.kind``.
    """
    e1 = np.exp(-protocol.tr_ms / t1_ms)
    transverse = np.exp(-protocol.te_ms / t2_ms)
    if protocol.kind == "gre":
        alpha = math.radians(protocol.flip_deg)
        return proton_density * math.sin(alpha) * (1 - e1) / (1 - math.cos(alpha) * e1) * transverse
    if protocol.kind == "se":
        return proton_density * (1 - e1) * transverse
    if protocol.kind == "ir":
        ti = protocol.ti_ms
        if ti is None:
            csf_t1 = TISSUE_RELAXATION_3T["csf"].t1_ms
            ti = csf_t1 * math.log(2 / (1 + math.exp(-protocol.tr_ms / csf_t1)))
        return proton_density * np.abs(1 - 2 * np.exp(-ti / t1_ms) + e1) * transverse
    raise ValueError(f"unknown sequence kind {protocol.kind!r}; expected 'gre', 'se' or 'ir'")


def _contrast_t1(relaxation: Relaxation, gadolinium_mm: float | np.ndarray) -> float | np.ndarray:
    return 1.0 / (1.0 / relaxation.t1_ms + GADOLINIUM_R1_PER_MM_MS * gadolinium_mm)


def tissue_contrast_table() -> dict[str, dict[str, float]]:
    """Each tissue's mean signal relative to white matter, per modality (before texture, blur and noise).

    Returns:
        modality → tissue (``wm``, ``gm``, ``csf``, ``edema``, ``enhancing``, ``necrosis``, ``haemorrhage``) →
        signal / WM signal.
    """
    table: dict[str, dict[str, float]] = {}
    for modality in MODALITIES:
        protocol = SEQUENCE_PROTOCOLS[modality]
        signals = {}
        for tissue, rel in TISSUE_RELAXATION_3T.items():
            gadolinium = GADOLINIUM_CONCENTRATION_MM if protocol.contrast and tissue == "enhancing" else 0.0
            signals[tissue] = float(
                signal_intensity(protocol, rel.proton_density, _contrast_t1(rel, gadolinium), rel.t2_ms)
            )
        table[modality] = {tissue: value / signals["wm"] for tissue, value in signals.items()}
    return table
