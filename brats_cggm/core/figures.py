"""Figures: matplotlib (the ``plots`` extra) imported on demand, PNGs written atomically."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from brats_cggm.core.files import atomic_write

__all__ = ["import_pyplot", "save_png"]


def import_pyplot(purpose: str) -> Any:
    """``matplotlib.pyplot`` with the non-interactive Agg backend.

    Args:
        purpose: what needs it, for the error message (e.g. ``"the diagnostics plots"``).

    Returns:
        The ``pyplot`` module.

    Raises:
        ImportError: matplotlib is not installed (naming the extra that installs it).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(f"{purpose} need matplotlib: pip install 'brats-cggm[plots]'") from exc
    return plt


def save_png(figure: Any, path: str | Path, dpi: int = 120) -> Path:
    """Write ``figure`` as a PNG, atomically (a reader never sees half a file).

    Args:
        figure: a matplotlib figure.
        path: the file.
        dpi: resolution.

    Returns:
        ``path``.
    """
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return atomic_write(path, lambda f: f.write(buffer.getvalue()))
