"""What an absent modality is for the analysis tools: the definitions, their names and their help text.

- ``"mask"`` (the default): the network's own definition (:mod:`brats_cggm.core.availability`), the one it was
  trained with and ``brats-cggm-infer --missing-modality drop`` uses: ``forward_features(x, available=mask)``,
  an absent modality's encoder does not run, its channel is never read and the fusion rescales the present ones.
- ``"zero-input"``: the absent modality's image replaced by zeros (after intensity normalisation, a flat volume
  the network never saw in training), the definition of the figures before 0.2.

``brats-cggm-valuate``, ``brats-cggm-diagnose`` and ``brats-cggm-compare`` take it as ``--absent`` and their
reports record it (``absent``), so that numbers of the two definitions are never mixed silently.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "ABSENCE_DEFINITIONS",
    "ABSENCE_HELP",
    "ABSENCE_MODES",
    "LEGACY_ABSENCE",
    "absence_of",
    "check_absence",
]

#: The definitions of an absent modality the analysis tools know; the first is the default.
ABSENCE_MODES = ("mask", "zero-input")
#: What each definition means, as the reports and the command lines' help say it.
ABSENCE_DEFINITIONS = {
    "mask": "the modality's encoder does not run and fusion rescales the present ones (the trained definition, "
    "as --missing-modality drop)",
    "zero-input": "the modality's image is replaced by zeros (the figures before 0.2)",
}
#: The ``--absent`` help of ``brats-cggm-valuate``, ``brats-cggm-diagnose`` and ``brats-cggm-compare``.
ABSENCE_HELP = (
    "what an absent modality is: "
    + "; ".join(f"{mode}: {ABSENCE_DEFINITIONS[mode]}" for mode in ABSENCE_MODES)
    + " (default: %(default)s)"
)
#: The definition of reports that record none: every one written before ``absent`` existed zeroed the inputs.
LEGACY_ABSENCE = "zero-input"


def check_absence(absent: str) -> str:
    """Return ``absent`` if it names a definition of :data:`ABSENCE_MODES`.

    Args:
        absent: ``"mask"`` or ``"zero-input"``.

    Returns:
        ``absent``.

    Raises:
        ValueError: any other value.
    """
    if absent not in ABSENCE_MODES:
        raise ValueError(f"absent must be one of {ABSENCE_MODES}, got {absent!r}")
    return absent


def absence_of(results: Sequence[dict]) -> str:
    """The one definition of an absent modality that valuation results (or reports) were computed with.

    Args:
        results: dicts with ``absent`` (:func:`~brats_cggm.brats.analysis.valuation.valuate_cases`'s per-case results,
            :func:`~brats_cggm.brats.analysis.diagnostics.diagnose_run`'s reports); one without counts as
            :data:`LEGACY_ABSENCE`.

    Returns:
        The definition.

    Raises:
        ValueError: the results mix definitions, or there is none.
    """
    found = sorted({r.get("absent", LEGACY_ABSENCE) for r in results})
    if not found:
        raise ValueError("no valuation result to take the definition of an absent modality from")
    if len(found) > 1:
        raise ValueError(f"the valuations mix definitions of an absent modality: {found}")
    return found[0]
