"""Writing disk cache entries safely: atomic against killed and concurrent writers, full disks named.

- An entry is written whole into a temporary sibling folder (``.tmp.<pid>.<token>.<entry name>``), fsynced,
  then renamed into place. A rename onto an existing entry fails (ENOTEMPTY/EEXIST) instead of replacing it:
  an existing valid entry (another writer's) is kept and ours discarded; an invalid one is moved aside
  atomically and the rename retried, tolerating another writer moving it first. No check-then-act window.
- Builders take the entry's lock (:func:`entry_lock`, a :class:`~brats_cggm.core.locks.FileLock` on
  ``<kind folder>/<entry name>.lock``) so that only one builds; the loser of a race finds the winner's entry.
- :func:`remove_dead_temporaries` removes a temporary folder only when its entry's lock is free (nobody is
  writing it, whatever PID namespace or host a writer runs in), or, on a file system without locks, when it
  is older than :data:`TMP_MAX_AGE_S`.
- A full disk (ENOSPC/EDQUOT, or numpy's "N requested and M written") becomes a :class:`CacheEntryError`
  saying "no space left on device in <folder>: need ~N MB per case"; nothing half-written is left.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from brats_cggm.brats.data.cache.integrity import CacheEntryError, entry_problem, read_meta, save_checksummed
from brats_cggm.core.locks import FileLock, LockHeldError

__all__ = [
    "TMP_MAX_AGE_S",
    "TMP_PREFIX",
    "disk_full_error",
    "entry_lock",
    "is_disk_full",
    "remove_dead_temporaries",
    "rewrite_meta",
    "same_content",
    "write_entry",
]

TMP_PREFIX = ".tmp."
#: On a file system without locks, a temporary folder older than this (seconds) is taken for a dead writer's.
TMP_MAX_AGE_S = 24 * 3600

_META = "meta.json"
_PUBLISH_TRIES = 100
_SHORT_WRITE = re.compile(r"\d+ requested and \d+ written")


def entry_lock(entry_dir: str | os.PathLike) -> FileLock:
    """The lock of an entry: ``<kind folder>/<entry name>.lock`` (held while the entry is built)."""
    entry_dir = Path(entry_dir)
    return FileLock(entry_dir.parent / f"{entry_dir.name}.lock", f"cache entry {entry_dir}")


def _temporary(entry_dir: Path, tag: str = "") -> Path:
    return entry_dir.parent / f"{TMP_PREFIX}{os.getpid()}.{secrets.token_hex(4)}.{tag}{entry_dir.name}"


def _entry_of_temporary(name: str) -> str | None:
    """The entry name of a temporary folder's name, or None if it is not one of ours."""
    parts = name[len(TMP_PREFIX) :].split(".", 2)
    if len(parts) != 3 or not parts[0].isdigit():
        return None
    rest = parts[2]
    return rest[len("old.") :] if rest.startswith("old.") else rest


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def is_disk_full(exc: BaseException) -> bool:
    """Whether an exception says the device is full (ENOSPC, EDQUOT, or numpy's short write)."""
    if not isinstance(exc, OSError):
        return False
    return exc.errno in (errno.ENOSPC, errno.EDQUOT) or bool(_SHORT_WRITE.search(str(exc)))


def disk_full_error(entry_dir: str | os.PathLike, case_id: Any, need_bytes: float) -> CacheEntryError:
    """The error of a full device: "no space left on device in <cache dir>: need ~N MB per case".

    Args:
        entry_dir: the entry that could not be written.
        case_id: its case.
        need_bytes: the estimated size of one entry.

    Returns:
        A :class:`CacheEntryError` with ``errno`` ENOSPC.
    """
    entry_dir = Path(entry_dir)
    need_mb = need_bytes / 1e6
    need = f"{need_mb:.1f}" if need_mb < 10 else f"{need_mb:.0f}"
    cause = f"no space left on device in {entry_dir.parent.parent}: need ~{need} MB per case"
    return CacheEntryError(entry_dir, case_id, cause, errno.ENOSPC)


def _write_complete(tmp: Path, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
    tmp.mkdir()
    files = {f"{name}.npy": save_checksummed(tmp / f"{name}.npy", array) for name, array in arrays.items()}
    with open(tmp / _META, "w", encoding="utf-8") as f:  # last: an entry with a meta.json is complete
        json.dump({**meta, "files": files}, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(tmp)


def same_content(meta: Mapping[str, Any]) -> Callable[[Path], bool]:
    """Whether an existing entry is a valid one with ``meta``'s format, key and input content (the default
    test of :func:`write_entry` for keeping another writer's entry)."""

    def hashes(m: Mapping[str, Any]) -> list:
        return [row[-1] for row in m.get("inputs") or []]

    def accept(entry_dir: Path) -> bool:
        other = read_meta(entry_dir)
        if other is None or any(other.get(k) != meta.get(k) for k in ("format", "key", "kind")):
            return False
        return hashes(other) == hashes(meta) and entry_problem(entry_dir) is None

    return accept


def _publish(tmp: Path, entry_dir: Path, accept: Callable[[Path], bool], case_id: Any) -> None:
    """Rename the complete ``tmp`` to ``entry_dir``, never over another writer's valid entry."""
    for _ in range(_PUBLISH_TRIES):
        try:
            os.rename(tmp, entry_dir)  # fails on a non-empty destination: no replace of what we did not check
            _fsync_dir(entry_dir.parent)
            return
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
        if accept(entry_dir):
            return  # another writer's valid entry: ours is discarded
        aside = _temporary(entry_dir, "old.")
        try:
            os.rename(entry_dir, aside)
        except FileNotFoundError:
            continue  # another writer moved it first
        shutil.rmtree(aside, ignore_errors=True)
    raise CacheEntryError(entry_dir, case_id, f"still replaced by other writers after {_PUBLISH_TRIES} tries")


def write_entry(
    entry_dir: str | os.PathLike,
    arrays: Mapping[str, np.ndarray],
    meta: Mapping[str, Any],
    accept: Callable[[Path], bool] | None = None,
) -> Path:
    """Write one entry atomically; safe against a concurrent writer of the same entry, with or without locks.

    A write killed at any point leaves ``entry_dir`` absent, or the old entry, or the new complete one, plus
    perhaps a ``.tmp.*`` folder that :func:`remove_dead_temporaries` removes.

    Args:
        entry_dir: the entry's folder.
        arrays: ``.npy`` files to write, by name (each checksummed into ``meta["files"]``).
        meta: written as ``meta.json`` (last), with ``files`` added.
        accept: whether an entry found in place is kept instead of ours (default: :func:`same_content`).

    Returns:
        ``entry_dir`` (ours, or the equivalent valid entry another writer put there).

    Raises:
        CacheEntryError: no space left on the device (with the space a case needs), or the entry could not
            be put in place; other ``OSError``: the write failed (the temporary folder is removed).
    """
    entry_dir = Path(entry_dir)
    entry_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(entry_dir)
    try:
        _write_complete(tmp, arrays, meta)
        _publish(tmp, entry_dir, accept or same_content(meta), meta.get("case_id"))
    except BaseException as exc:
        if is_disk_full(exc):
            need = sum(np.asarray(a).nbytes for a in arrays.values())
            raise disk_full_error(entry_dir, meta.get("case_id"), need) from exc
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return entry_dir


def rewrite_meta(entry_dir: str | os.PathLike, meta: Mapping[str, Any]) -> None:
    """Replace an entry's ``meta.json`` atomically (a temporary file renamed over it)."""
    entry_dir = Path(entry_dir)
    tmp = entry_dir / f"{TMP_PREFIX}{os.getpid()}.{secrets.token_hex(4)}.{_META}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(dict(meta), f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, entry_dir / _META)
    finally:
        tmp.unlink(missing_ok=True)


def _nobody_writes(lock: FileLock, tmp: Path) -> bool:
    """Whether ``tmp``'s writer is gone; ``lock`` is then held (if the file system has locks)."""
    try:
        lock.acquire(timeout_s=0)
    except LockHeldError:
        return False
    if lock.held:
        return True
    try:  # no locks on this file system: only age tells
        return time.time() - tmp.stat().st_mtime > TMP_MAX_AGE_S
    except FileNotFoundError:
        return False


def remove_dead_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary folders of dead writers in a kind folder (left by a killed fill).

    A temporary folder is removed only while its entry's lock is free, so a live writer's (which holds it)
    survives whatever its PID namespace or host; on a file system without locks, only once older than
    :data:`TMP_MAX_AGE_S`.

    Args:
        folder: the kind folder (``<cache_dir>/<kind>-<key>``).

    Returns:
        The folders removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for tmp in sorted(folder.glob(f"{TMP_PREFIX}*")):
        name = _entry_of_temporary(tmp.name)
        if name is None or not tmp.is_dir():
            continue
        lock = entry_lock(folder / name)
        try:
            if _nobody_writes(lock, tmp):
                shutil.rmtree(tmp, ignore_errors=True)
                removed.append(tmp)
        finally:
            lock.release()
    return removed
