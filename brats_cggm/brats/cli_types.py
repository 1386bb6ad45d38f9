"""Argument types of the command line tools: numbers checked when the arguments are parsed (exit 2, usage)."""

from __future__ import annotations

import argparse
import math

__all__ = ["finite_float", "non_negative_float", "overlap_fraction", "positive_int"]


def finite_float(text: str) -> float:
    """A finite number.

    Args:
        text: the argument.

    Returns:
        The number.

    Raises:
        argparse.ArgumentTypeError: if it is not a finite number.
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    """A finite number >= 0 (a tolerance).

    Raises:
        argparse.ArgumentTypeError: otherwise.
    """
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {text}")
    return value


def overlap_fraction(text: str) -> float:
    """A sliding-window overlap, in [0, 1) (at 1 the window would never advance).

    Raises:
        argparse.ArgumentTypeError: otherwise.
    """
    value = finite_float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1 (a window size, a batch size, a count).

    Raises:
        argparse.ArgumentTypeError: otherwise.
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value
