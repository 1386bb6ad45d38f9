"""What every command line shares: argument types, deprecated flag spellings, the one-line error printer.

The argument types check numbers when the arguments are parsed (exit 2, usage). :class:`CommandParser`
keeps an old flag spelling working as a hidden alias that warns once per use.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from typing import Any

__all__ = [
    "CommandParser",
    "finite_float",
    "non_negative_float",
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


class _DeprecatedAlias(argparse.Action):
    """An old spelling of a flag: warns, then does what the current flag's action does."""

    def __init__(self, option_strings: list[str], dest: str, target: argparse.Action, **kwargs: Any) -> None:
        self.target = target
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: str | None = None
    ) -> None:
        print_warning(f"{option} is deprecated; use {self.target.option_strings[0]}", parser.prog)
        self.target(parser, namespace, values, option)


class CommandParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose flags can keep deprecated spellings (hidden from ``--help``).

    A required flag with an alias is satisfied by either spelling; the check runs after parsing, with
    argparse's own message and exit status 2.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._required_with_alias: list[argparse.Action] = []

    def add_deprecated_alias(self, old: str, new: str) -> None:
        """Accept ``old`` as a hidden spelling of the already added flag ``new``.

        Args:
            old: the deprecated spelling, e.g. ``"--output"``.
            new: the current spelling, e.g. ``"--output-dir"``.

        Raises:
            KeyError: if no flag ``new`` was added.
        """
        target = self._option_string_actions[new]
        if target.required:
            target.required = False
            self._required_with_alias.append(target)
        self.add_argument(
            old,
            dest=target.dest,
            action=_DeprecatedAlias,
            target=target,
            nargs=target.nargs,
            type=target.type,  # type: ignore[arg-type]  # None (no conversion) is add_argument's own default
            choices=target.choices,
            metavar=target.metavar,
        )

    def add_deprecated_aliases(self, aliases: dict[str, str]) -> None:
        """:meth:`add_deprecated_alias` for every ``{old: new}`` pair."""
        for old, new in aliases.items():
            self.add_deprecated_alias(old, new)

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        missing = [a.option_strings[0] for a in self._required_with_alias if getattr(parsed, a.dest) is None]
        if missing:
            self.error(f"the following arguments are required: {', '.join(missing)}")
        return parsed, extras


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
