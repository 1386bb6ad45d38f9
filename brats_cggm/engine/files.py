"""Atomic file writes: a temporary file in the target's folder, fsynced, then renamed over the target.

Every file the engine writes (checkpoints, weights, ``metrics.json``) goes through :func:`atomic_write`, so
all get one permission policy: that of a plain ``open(path, "w")``, i.e. ``0o666`` less the process's umask
(``tempfile.mkstemp`` would make them ``0o600``). A write killed half-way leaves a temporary file named
``.<target name>.<random>.tmp``; :func:`remove_stale_temporaries` deletes those of a target when a run starts.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = ["FILE_MODE", "atomic_write", "atomic_write_text", "remove_stale_temporaries", "temporary_files"]

#: The mode new files are created with; the kernel applies the umask to it, as for ``open(path, "w")``.
FILE_MODE = 0o666


def _temporary_name(path: Path) -> str:
    return f".{path.name}.{secrets.token_hex(6)}.tmp"


def temporary_files(path: str | os.PathLike) -> list[Path]:
    """The temporary files :func:`atomic_write` leaves next to ``path`` when it is killed mid-write."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    return sorted(path.parent.glob(f".{path.name}.*.tmp"))


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete what :func:`temporary_files` finds (left by a killed write: nothing else writes under that name).

    Args:
        path: the target file whose temporaries are removed.

    Returns:
        The files removed.
    """
    removed = []
    for tmp in temporary_files(path):
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def _create_temporary(path: Path) -> tuple[int, Path]:
    while True:
        tmp = path.parent / _temporary_name(path)
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE), tmp
        except FileExistsError:
            continue


def atomic_write(
    path: str | os.PathLike,
    write: Callable[[IO[Any]], None],
    binary: bool = True,
    before_replace: Callable[[], None] | None = None,
) -> Path:
    """Write ``path`` through a temporary file in the same folder, fsync it, and rename it over ``path``.

    The file's mode is ``0o666`` less the umask, whatever writes it. A failure (or a kill) before the
    rename leaves ``path`` as it was.

    Args:
        path: the target file; its folder is created if needed.
        write: called with the open temporary file.
        binary: open the temporary file in binary mode (else text, UTF-8).
        before_replace: called right before the rename (e.g. to move the old file aside).

    Returns:
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temporary(path)
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write`).

    Args:
        path: the target file.
        text: its new content.

    Returns:
        ``path``.
    """
    return atomic_write(path, lambda f: f.write(text), binary=False)
