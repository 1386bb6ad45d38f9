"""The error every adapter raises for unusable input files."""

from __future__ import annotations

__all__ = ["AdapterDataError"]


class AdapterDataError(ValueError):
    """A data set file is missing something or holds something the task cannot use (the message names it)."""
