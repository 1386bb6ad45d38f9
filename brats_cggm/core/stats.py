"""Mean ± standard deviation over runs (seeds): one summary and one way to print it.

The standard deviation is the sample one (``ddof=1``); a single value has no spread to estimate, so its
``std`` is None (never 0, which would read as "no spread", nor NaN, which JSON cannot hold), and
:func:`format_mean_std` prints it without ``± std``.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "format_mean_std",
    "mean_std",
]


def mean_std(values: Iterable[float]) -> dict[str, Any]:
    """The mean, sample standard deviation and count of ``values``.

    Args:
        values: one number per run.

    Returns:
        ``{"mean": float, "std": float | None, "n": int}``; ``std`` is None for a single value.

    Raises:
        ValueError: no value.
    """
    numbers = [float(v) for v in values]
    if not numbers:
        raise ValueError("mean_std needs at least one value")
    std = statistics.stdev(numbers) if len(numbers) > 1 else None
    return {"mean": statistics.fmean(numbers), "std": std, "n": len(numbers)}


def format_mean_std(stats: Mapping[str, Any], signed: bool = False, digits: int = 3) -> str:
    """``"mean ± std"`` of a :func:`mean_std` result, or ``"mean"`` alone when it has no spread (one value).

    Args:
        stats: a :func:`mean_std` result (``mean`` and ``std``).
        signed: print the mean with its sign (``+0.120``).
        digits: decimals of both numbers.

    Returns:
        The text.
    """
    mean = f"{stats['mean']:{'+' if signed else ''}.{digits}f}"
    return mean if stats.get("std") is None else f"{mean} ± {stats['std']:.{digits}f}"
