"""Lock files that name their holder: one process at a time in a run folder or on a cache entry.

The exclusion is the kernel's ``flock`` on the lock file, not the file's existence: a lock dies with its
process (a SIGKILL, a crashed node: the NFS server drops the lease), so a stale lock never blocks anyone,
whatever PID namespace or host held it. The file's content says who holds it (host, PID, start time,
command), for the refusal message; a lock file found with content but no holder is a stale lock, taken over
with a log line naming its late holder. The holder deletes the file on release, so a finished run leaves no
lock behind.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["FileLock", "LockHeldError", "describe_holder"]

logger = logging.getLogger(__name__)

_RETRY: dict[str, Any] = {}

#: Seconds between two tries of a waiting :meth:`FileLock.acquire`.
POLL_S = 0.05


class LockHeldError(RuntimeError):
    """Another live process holds the lock.

    Attributes:
        path: the lock file.
        holder: what the holder wrote into it (may be empty when it had not written yet).
    """

    def __init__(self, path: Path, holder: dict[str, Any], purpose: str) -> None:
        self.path, self.holder = path, holder
        super().__init__(f"{purpose} is in use by {describe_holder(holder)} (lock file {path})")


def describe_holder(holder: dict[str, Any]) -> str:
    """``"pid 123 on host h since 2026-12-07T10:00:00Z (brats-cggm-infer ...)"``, from a lock file's content."""
    if not holder:
        return "another process (that has not written its name yet)"
    text = f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}"
    if holder.get("since"):
        text += f" since {holder['since']}"
    if holder.get("command"):
        text += f" ({holder['command']})"
    return text


def _holder_record() -> dict[str, Any]:
    # orig_argv keeps "-m monai.bundle", which sys.argv turns into a path to __main__.py
    argv = getattr(sys, "orig_argv", sys.argv)
    command = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(argv))
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "since": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": command[:300],
    }


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 65536).decode("utf-8", errors="replace")
        holder = json.loads(text) if text.strip() else {}
        return holder if isinstance(holder, dict) else {}
    except (OSError, ValueError):
        return {}


class FileLock:
    """An exclusive lock on ``path`` that names its holder; a context manager.

    Args:
        path: the lock file (created if missing; its folder must exist).
        purpose: what the lock protects, for messages (``"output_dir runs/x"``).

    Example::

        with FileLock(run_dir / ".lock", f"output_dir {run_dir}"):
            train()
    """

    def __init__(self, path: str | os.PathLike, purpose: str = "") -> None:
        self.path = Path(path)
        self.purpose = purpose or str(self.path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self._fd is not None

    def _try_once(self) -> dict[str, Any] | None:
        """Take the lock, or return the holder's record (None once taken)."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_holder(fd)
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                return holder
            if exc.errno == errno.ENOLCK:  # a file system without locks: nothing to exclude with
                logger.warning("%s: the file system does not support locks; going on without one", self.path)
                return None
            raise
        try:
            same_file = os.fstat(fd).st_ino == os.stat(self.path).st_ino
        except FileNotFoundError:
            same_file = False
        if not same_file:  # the holder released (and deleted) it between our open and our flock
            os.close(fd)
            return _RETRY
        stale = _read_holder(fd)
        if stale:
            logger.warning(
                "%s: taking over the stale lock of %s (it no longer runs)", self.path, describe_holder(stale)
            )
        try:
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, json.dumps(_holder_record()).encode())
            os.fsync(fd)
        except OSError:  # a full disk: give the lock up (and its file) rather than hold it on a leaked fd
            self._fd = fd
            self.release()
            raise
        self._fd = fd
        return None

    def acquire(self, timeout_s: float | None = 0.0) -> FileLock:
        """Take the lock.

        Args:
            timeout_s: seconds to wait for a live holder to release it; 0 (the default) refuses at once,
                None waits for ever.

        Returns:
            ``self``.

        Raises:
            LockHeldError: another live process holds it (after ``timeout_s``), named in the message.
        """
        if self._fd is not None:
            return self
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            holder = self._try_once()
            if holder is None:
                return self
            if holder is _RETRY:
                continue
            if deadline is not None and time.monotonic() >= deadline:
                raise LockHeldError(self.path, holder, self.purpose)
            time.sleep(POLL_S)

    def release(self) -> None:
        """Delete the lock file and release the lock (a no-op when not held)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.unlink(self.path)  # before unlocking: a waiter then sees another file and tries again
        except FileNotFoundError:
            pass
        finally:
            os.close(fd)

    def __enter__(self) -> FileLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
