"""Atomic file writes: a temporary file in the target's folder, fsynced, then renamed over the target.

Every file the package writes (checkpoints, weights, ``metrics.json``, reports, predictions, feature files,
plots) goes through :func:`atomic_write` or, for writers that take a file name, :func:`atomic_path`, so all
get one permission policy: that of a plain ``open(path, "w")``, i.e. ``0o666`` less the process's umask
(``tempfile.mkstemp`` would make them ``0o600``). A write killed half-way leaves a temporary file named
``.<target name>.<random>.tmp``; :func:`remove_stale_temporaries` deletes those of a target when a run starts.
JSON files are written by :func:`write_json`, after :func:`to_jsonable`. A report is never written over an
earlier one unless asked: :func:`refuse_existing` checks that, before any work, for every command and writer.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

__all__ = [
    "FILE_MODE",
    "REPLACE_ADVICE",
    "atomic_path",
    "atomic_write",
    "atomic_write_text",
    "existing_file_error",
    "refuse_existing",
    "remove_stale_temporaries",
    "save_new_file",
    "temporary_files",
    "to_jsonable",
    "write_json",
]

#: The mode new files are created with; the kernel applies the umask to it, as for ``open(path, "w")``.
FILE_MODE = 0o666


def _temporary_name(path: Path, suffix: str = "") -> str:
    return f".{path.name}.{secrets.token_hex(6)}.tmp{suffix}"


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


def _create_temporary(path: Path, suffix: str = "") -> tuple[int, Path]:
    while True:
        tmp = path.parent / _temporary_name(path, suffix)
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE), tmp
        except FileExistsError:
            continue


def atomic_write(
    path: str | os.PathLike,
    write: Callable[[IO[Any]], object],
    binary: bool = True,
    before_replace: Callable[[], None] | None = None,
) -> Path:
    """Write ``path`` through a temporary file in the same folder, fsync it, and rename it over ``path``.

    The file's mode is ``0o666`` less the umask, whatever writes it. A failure (or a kill) before the
    rename leaves ``path`` as it was.

    Args:
        path: the target file; its folder is created if needed.
        write: called with the open temporary file (what it returns is ignored).
        binary: open the temporary file in binary mode (else text, UTF-8).
        before_replace: called right before the rename (e.g. to move the old file aside).

    Returns:
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temporary(path)
    try:
        stream: IO[Any] = os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8")
        with stream as f:
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


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "", overwrite: bool = True) -> Iterator[Path]:
    """A temporary file beside ``path`` for writers that take a file name (nibabel, h5py, matplotlib).

    The temporary file is created empty with the mode of :func:`atomic_write`; the writer replaces its
    content. When the block ends without an error the file is fsynced and renamed to ``path``; on an error
    it is removed and ``path`` stays as it was.

    Args:
        path: the target file; its folder is created if needed.
        suffix: appended to the temporary name, for writers that choose the format from the extension
            (e.g. ``".nii.gz"``).
        overwrite: replace an existing ``path``; when False the temporary file is hard-linked to ``path``,
            which fails if ``path`` appeared in the meantime (on a file system without hard links, the
            check and the rename are two steps).

    Yields:
        The temporary path to write.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    if not overwrite and path.exists():
        raise FileExistsError(f"{path}: exists")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temporary(path, suffix)
    os.close(fd)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise FileExistsError(f"{path}: exists") from None
            except OSError:
                if path.exists():
                    raise FileExistsError(f"{path}: exists") from None
                os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def to_jsonable(value: Any) -> Any:
    """``value`` made of JSON types only, for :func:`json.dumps`.

    Mappings become dicts with string keys; lists, tuples and sets become lists; numpy scalars, numpy
    arrays and tensors their Python numbers or nested lists; ``str``, ``int``, ``float``, ``bool`` and None
    stay; anything else (paths, devices, ...) becomes its ``str``.

    Args:
        value: the value to convert.

    Returns:
        The converted value.
    """
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.generic | np.ndarray | torch.Tensor):
        return value.tolist()
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def write_json(path: str | os.PathLike, value: Any, allow_nan: bool = True) -> Path:
    """Write ``to_jsonable(value)`` to ``path`` atomically, indented by 2, with a final newline.

    Args:
        path: the target file.
        value: what to write (see :func:`to_jsonable`).
        allow_nan: write NaN and infinities as JavaScript does; when False they raise ``ValueError``.

    Returns:
        ``path``.

    Raises:
        ValueError: a NaN or infinity when ``allow_nan`` is False.
    """
    return atomic_write_text(path, json.dumps(to_jsonable(value), indent=2, allow_nan=allow_nan) + "\n")


#: What :func:`refuse_existing`'s message advises by default.
REPLACE_ADVICE = "to replace it"


def existing_file_error(
    path: str | os.PathLike, advice: str = REPLACE_ADVICE, flag: str = "--overwrite"
) -> FileExistsError:
    """The error for an existing file that may not be replaced: it names the file and the flag that would.

    Args:
        path: the existing file (or folder).
        advice: what follows the flag in the message (``"to replace it"``, ``"or another --output-dir"``).
        flag: the option that allows replacing it.

    Returns:
        ``FileExistsError("<path>: exists; pass <flag> <advice>")``.
    """
    return FileExistsError(f"{path}: exists; pass {flag} {advice}")


def refuse_existing(
    paths: Iterable[str | os.PathLike], overwrite: bool, advice: str = REPLACE_ADVICE, flag: str = "--overwrite"
) -> None:
    """Refuse to write over existing files unless ``overwrite``: the one check of every command and report writer.

    Call it before any work, so that a refused command has changed nothing.

    Args:
        paths: the files (or folders) about to be written.
        overwrite: whether they may be replaced (the command's ``--overwrite``).
        advice: what follows the flag in the message (see :func:`existing_file_error`).
        flag: the option named in the message.

    Raises:
        FileExistsError: naming the first of ``paths`` that exists, when ``overwrite`` is False.
    """
    if overwrite:
        return
    for path in paths:
        if Path(path).exists():
            raise existing_file_error(path, advice, flag)


def save_new_file(path: str | os.PathLike, content: bytes | str, overwrite: bool = False) -> Path:
    """Write ``content`` to ``path`` atomically (:func:`atomic_path`), never replacing a file unless ``overwrite``.

    The one writer of the small files a command makes (records, reports, pictures, pages): refused up front with
    :func:`refuse_existing`'s message, and again if ``path`` appears while writing.

    Args:
        path: the target file; its suffix is kept on the temporary name.
        content: bytes, or text written as UTF-8.
        overwrite: replace an existing file.

    Returns:
        ``path``.

    Raises:
        FileExistsError: if ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    refuse_existing([path], overwrite)
    data = content.encode("utf-8") if isinstance(content, str) else content
    try:
        with atomic_path(path, suffix=path.suffix, overwrite=overwrite) as tmp:
            tmp.write_bytes(data)
    except FileExistsError:
        raise existing_file_error(path) from None
    return path
