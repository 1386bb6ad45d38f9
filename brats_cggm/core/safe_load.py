"""Reading files of tensors as data only: ``torch.load(weights_only=True)`` and the one message its failures get.

Every weights, checkpoint or feature file the package reads is loaded with ``weights_only=True``: tensors and plain
python types, never a pickled object, since unpickling one can run any code. When torch refuses a file, its message
advises loading it again "with `weights_only` set to `False`" or allowlisting the refused global, both of which
would run the code just refused. :func:`load_failure_message` says what was refused, without that advice, and
:func:`load_tensors` raises it; every reader of such files goes through them, so a refusal reads the same wherever
it reaches the user.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["WeightsLoadError", "load_failure_message", "load_tensors"]


class WeightsLoadError(ValueError):
    """A file of tensors could not be read, or was refused for holding more than data; the message names it."""


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


_UNKNOWN_CONTENT = "an object that is not a tensor nor a plain python type"


def _refused_content(exc: BaseException) -> str:
    """What the weights-only unpickler stopped at (``Unsupported global: GLOBAL io.open``), stripped of its advice."""
    _, found, rest = str(exc).partition("WeightsUnpickler error:")
    for line in rest.splitlines() if found else []:
        # torch goes on with "was not an allowed global ... Please use add_safe_globals": the advice is cut off
        line = re.split(r" was not an allowed global|\.? Please ", line.strip())[0].strip().rstrip(".")
        if "safe_globals" in line or "weights_only" in line:  # "types allowlisted via add_safe_globals, but got X"
            got = re.search(r"but got (.*)", line)
            line = f"got {got.group(1)}" if got else _UNKNOWN_CONTENT
        if line:
            return line
    return _UNKNOWN_CONTENT


def load_failure_message(exc: BaseException) -> str:
    """Our message for a failed ``torch.load(weights_only=True)``: what was refused, or why the file is unreadable.

    Never repeats torch's advice to load the file with ``weights_only`` off or to allowlist what was refused.

    Args:
        exc: what ``torch.load`` raised.

    Returns:
        One line, without the file name (the caller names the file).
    """
    if isinstance(exc, pickle.UnpicklingError):
        content = _refused_content(exc)
        if content.startswith("Unsupported operand"):  # an opcode torch.save never writes: not its file at all
            return f"cannot be read as tensors (UnpicklingError: {content})"
        return f"refused, it holds more than tensors and plain types ({content}); not unpickled, as that could run code"
    line = _first_line(exc)
    if "weights_only" in line:  # no advice about the unpickler's settings, whatever the error type
        line = "not a file of tensors"
    return f"cannot be read as tensors ({type(exc).__name__}: {line})"


def load_tensors(path: str | os.PathLike, map_location: Any = "cpu", allowed_globals: Sequence[Any] = ()) -> Any:
    """``torch.load(path, weights_only=True)``, with a refusal or a read error turned into :class:`WeightsLoadError`.

    Args:
        path: the file.
        map_location: passed to ``torch.load``.
        allowed_globals: data types the file may hold beyond tensors and plain types (e.g. numpy arrays), passed
            to ``torch.serialization.safe_globals``.

    Returns:
        What the file holds.

    Raises:
        FileNotFoundError: the file does not exist.
        WeightsLoadError: ``"<path>: <load_failure_message>"``. A refusal is raised without torch's exception as
            cause or context: its text is the advice to load the file unsafely.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: does not exist")
    try:
        with torch.serialization.safe_globals(list(allowed_globals)):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        refusal = load_failure_message(exc)
    except Exception as exc:  # truncated zip, not a torch file, I/O error
        raise WeightsLoadError(f"{path}: {load_failure_message(exc)}") from exc
    # raised outside the handler, so that no traceback or error chain carries torch's advice as the context
    raise WeightsLoadError(f"{path}: {refusal}")
