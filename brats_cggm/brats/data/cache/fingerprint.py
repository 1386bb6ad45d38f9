"""The input files of a cache entry: what they were when it was built, and whether they still are.

An entry records, per input file, ``[path, size, mtime_ns, ctime_ns, inode, sha256]``: the ``stat`` and a
SHA-256 of the file's (compressed) bytes. The rule (``cache_verify``):

- ``stat`` (default): identical stat -> the file is unchanged (nothing read). Any difference -> the file is
  hashed: the same content keeps the entry (its stored stat is refreshed, so the next check is a stat again),
  other content rebuilds it. Rewriting a file with its mtime restored (``os.utime``) still changes its ctime,
  which no user call can set back, so it is hashed; a data set copied with ``cp -a`` gets new inodes and
  ctimes, so it is hashed and, with identical content, reused.
- ``content``: every file is hashed at every check (for file systems whose stat cannot be trusted).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from typing import Any

__all__ = [
    "VERIFY_MODES",
    "case_key",
    "check_inputs_exist",
    "file_sha256",
    "fingerprint_problem",
    "input_fingerprint",
    "input_paths",
]

#: ``cache_verify`` settings: ``stat`` (hash only what the stat says changed) or ``content`` (always hash).
VERIFY_MODES = ("stat", "content")

_CHUNK = 8 << 20


def input_paths(item: Mapping[str, Any]) -> list[str]:
    """The absolute paths of a data list item's ``image`` and ``label`` files, in order."""
    paths: list[str | os.PathLike] = []
    for key in ("image", "label"):
        value = item.get(key)
        if value is None:
            continue
        paths += [value] if isinstance(value, (str, os.PathLike)) else list(value)
    return [os.path.abspath(str(p)) for p in paths]


def case_key(item: Mapping[str, Any]) -> str:
    """The name of a data list item's case: its ``case_id``, else the name of its first input file.

    Items without ``case_id`` (MONAI Label's data lists hold only ``image`` and ``label``) are named by their
    files, so the name is the same at every run; two such items whose first files share a name in different
    folders share it too, but never a cache entry (:func:`~brats_cggm.brats.data.cache.disk.entry_name` adds a
    hash of every input path).

    Args:
        item: a data list item (``image``, optional ``label`` and ``case_id``).

    Returns:
        The case's name, a string.

    Raises:
        ValueError: the item has neither ``case_id`` nor an input file.
    """
    if item.get("case_id") is not None and str(item["case_id"]):
        return str(item["case_id"])
    paths = input_paths(item)
    if not paths:
        raise ValueError(f"data list item {dict(item)!r} has neither case_id nor image")
    return os.path.basename(paths[0])


def _stat(path: str, case_id: Any) -> list[int]:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: input file of case {case_id!r} does not exist") from None
    return [int(st.st_size), int(st.st_mtime_ns), int(st.st_ctime_ns), int(st.st_ino)]


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, hexadecimal."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def check_inputs_exist(item: Mapping[str, Any]) -> None:
    """Raise ``FileNotFoundError`` naming the file and the case if an input file is missing."""
    for path in input_paths(item):
        _stat(path, case_key(item))


def input_fingerprint(item: Mapping[str, Any]) -> list[list]:
    """The case's input files as they are now, hashed: an entry built from them records this.

    Args:
        item: a data list item (``image``: a path or a list of paths; optional ``label``).

    Returns:
        ``[[absolute path, size, mtime_ns, ctime_ns, inode, sha256], ...]``.

    Raises:
        FileNotFoundError: an input file is missing (named).
    """
    return [[path, *_stat(path, case_key(item)), file_sha256(path)] for path in input_paths(item)]


def fingerprint_problem(stored: Any, item: Mapping[str, Any], verify: str = "stat") -> tuple[str | None, list | None]:
    """Whether an entry's recorded inputs still describe the case's files.

    Args:
        stored: the entry's ``meta["inputs"]``.
        item: the data list item.
        verify: one of :data:`VERIFY_MODES`.

    Returns:
        ``(cause, refreshed)``: cause is None when the content is unchanged; refreshed is the fingerprint with
        the current stat where only the stat changed (to be stored), else None.

    Raises:
        ValueError: an unknown ``verify``.
        FileNotFoundError: an input file is missing (named).
    """
    if verify not in VERIFY_MODES:
        raise ValueError(f"cache_verify: {verify!r}: expected one of {VERIFY_MODES}")
    paths = input_paths(item)
    if not isinstance(stored, list) or [row[0] if isinstance(row, list) else None for row in stored] != paths:
        return "input files differ from those the entry was built from", None
    if any(len(row) != 6 for row in stored):
        return "input fingerprint incomplete", None
    refreshed, changed = [], False
    for path, row in zip(paths, stored):
        now = _stat(path, case_key(item))
        if verify == "stat" and now == row[1:5]:
            refreshed.append(row)
            continue
        if file_sha256(path) != row[5]:
            return f"input {path} changed", None
        changed |= now != row[1:5]
        refreshed.append([path, *now, row[5]])
    return None, refreshed if changed else None
