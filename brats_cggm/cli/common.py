"""What every command line shares: its parser class, argument types, the one-line error and warning printers.

The argument types check numbers when the arguments are parsed (exit 2, usage).
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

__all__ = [
    "CommandParser",
    "finite_float",
    "non_negative_float",
    "non_negative_int",
    "overlap_fraction",
    "positive_int",
    "print_error",
    "print_warning",
]


def print_error(message: str, prog: str | None = None) -> None:
    """Print ``error: <message>`` on stderr as one line (whitespace runs folded), prefixed by ``prog:`` if given."""
    prefix = f"{prog}: " if prog else ""
    print(f"{prefix}error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)


def print_warning(message: str, prog: str | None = None) -> None:
    """Print ``warning: <message>`` on stderr as one line, prefixed by ``prog:`` if given."""
    prefix = f"{prog}: " if prog else ""
    print(f"{prefix}warning: {' '.join(str(message).split())}", file=sys.stderr, flush=True)


class CommandParser(argparse.ArgumentParser):
    """The ``ArgumentParser`` of every ``brats-cggm-*`` command: no abbreviated flags.

    Abbreviations are off (``allow_abbrev=False``), so a renamed flag's old spelling is refused rather than taken
    as a prefix of the new one (``--output`` for ``--output-dir``).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)


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


def _int_at_least(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {text}")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0 (a count that may be none, e.g. worker processes).

    Raises:
        argparse.ArgumentTypeError: otherwise.
    """
    return _int_at_least(text, 0)


def positive_int(text: str) -> int:
    """An integer >= 1 (a window size, a batch size, a count).

    Raises:
        argparse.ArgumentTypeError: otherwise.
    """
    return _int_at_least(text, 1)
