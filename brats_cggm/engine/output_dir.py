"""A training run's ``output_dir``: a new run never silently replaces the files of a previous one.

Called first in a training bundle's ``initialize`` (after the process group exists), before anything
writes to ``output_dir``:

- :class:`OutputDirLock` takes the folder for this run (a lock file naming its holder, see
  :class:`brats_cggm.core.locks.FileLock`): a second run into a folder that a live run trains in is refused,
  naming that run, whatever its ``resume`` / ``overwrite``. The one exception is a lock held by a process that
  launched this one (its parent, or further up, on this host): a harness that initialised the same config and
  then started the run in a child (the MONAI Model Zoo's distributed tests), which waits for the run instead
  of training beside it; the run goes on under that lock;
- :func:`prepare_output_dir` refuses a folder holding a previous run's results (:data:`RESULT_FILES`:
  weights or metrics) unless the run resumes it (``resume``) or is told to replace it (``overwrite``,
  which removes the previous run's files first). A run that died before its first checkpoint leaves no
  results, only leftovers (its event file, temporaries, ``configs/``): the same command may reuse the
  folder; the dead run's event files are moved to ``aborted/<time>/`` (TensorBoard shows them as a run of
  their own instead of mixing their steps with the new run's), its temporaries deleted.

Rank 0 decides, locks and deletes; the other ranks get its answer, so every rank goes on or stops together.
"""

from __future__ import annotations

import atexit
import datetime
import logging
import os
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch.distributed as dist

from brats_cggm.core.distributed import get_world_size, is_main_process
from brats_cggm.core.locks import FileLock, LockHeldError, describe_holder
from brats_cggm.engine.resume import resolve_resume_path

__all__ = [
    "ABORTED_DIR",
    "LOCK_FILE",
    "RESULT_FILES",
    "RUN_FILES",
    "OutputDirInUseError",
    "OutputDirLock",
    "RunExistsError",
    "find_run_files",
    "launched_this_process",
    "prepare_output_dir",
]

logger = logging.getLogger(__name__)

#: What a training run writes into its ``output_dir`` (glob patterns), temporaries of killed writes included.
RUN_FILES = (
    "metrics.json",
    ".metrics.json.*.tmp",
    "events.out.tfevents.*",
    "models/*.pt",
    "models/.*.tmp",
)

#: The files that make ``output_dir`` a previous run's (weights or metrics): a new run is refused there.
#: The rest of :data:`RUN_FILES` alone (event files, temporaries) are leftovers of a run that died before
#: its first checkpoint, which the same command may replace.
RESULT_FILES = ("metrics.json", "models/*.pt")

#: Where, under ``output_dir``, a dead run's event files go when a new run reuses the folder.
ABORTED_DIR = "aborted"

#: The lock file of the run training in ``output_dir`` (not a run file: never counted nor removed as one).
LOCK_FILE = ".run.lock"

#: The training checkpoint ``resume: true`` continues from, relative to ``output_dir``.
_CHECKPOINT = Path("models") / "checkpoint.pt"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off", "none", "null"}


class RunExistsError(FileExistsError):
    """``output_dir`` holds a previous run, and neither resuming nor overwriting was asked for."""


class OutputDirInUseError(RuntimeError):
    """Another live run trains in ``output_dir`` (the message names it)."""


def _ancestor_pids() -> set[int]:
    """The PIDs of this process's parent, its parent's parent, ... (empty where ``/proc`` cannot tell)."""
    pids: set[int] = set()
    pid = os.getppid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        try:
            # /proc/<pid>/stat: "pid (comm) state ppid ...", comm may hold spaces or parentheses
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            break
    return pids


def launched_this_process(holder: dict[str, Any]) -> bool:
    """Whether a lock's holder is a process that launched this one: its parent, or further up, on this host.

    Args:
        holder: the holder's record from its lock file (``host``, ``pid``; :class:`~brats_cggm.core.locks.FileLock`).

    Returns:
        True if ``holder`` names this host and one of this process's ancestors.
    """
    pid = holder.get("pid")
    return holder.get("host") == socket.gethostname() and isinstance(pid, int) and pid in _ancestor_pids()


def _flag(value: Any, name: str) -> bool:
    if isinstance(value, bool) or value is None:
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE | _FALSE:
        return text in _TRUE
    raise ValueError(f"{name}={value!r}: expected true or false")


def find_run_files(output_dir: str | os.PathLike, patterns: Sequence[str] = RUN_FILES) -> list[Path]:
    """The files of a previous run in ``output_dir`` (none when it does not exist).

    Args:
        output_dir: the run's output folder.
        patterns: glob patterns, relative to ``output_dir``, of the files a run writes.

    Returns:
        The files found, sorted.
    """
    root = Path(output_dir)
    if not root.is_dir():
        return []
    return sorted({p for pattern in patterns for p in root.glob(pattern) if p.is_file() or p.is_symlink()})


def _set_aside(output_dir: Path, leftovers: list[Path]) -> None:
    """Move a dead run's event files to ``aborted/<time>/`` and delete its temporaries."""
    events = [p for p in leftovers if p.name.startswith("events.out.tfevents.")]
    if events:
        stamp = datetime.datetime.fromtimestamp(max(p.lstat().st_mtime for p in events), datetime.timezone.utc)
        target = output_dir / ABORTED_DIR / stamp.strftime("%Y%m%dT%H%M%S.%fZ")
        target.mkdir(parents=True, exist_ok=True)
        for path in events:
            path.rename(target / path.name)
        logger.warning(
            "%s: a previous run died before its first checkpoint; its event file(s) moved to %s",
            output_dir,
            target.relative_to(output_dir),
        )
    for path in leftovers:
        if path not in events:
            path.unlink(missing_ok=True)


def _decide(output_dir: Path, overwrite: bool, resuming: bool, patterns: Sequence[str]) -> list[Path]:
    found = find_run_files(output_dir, patterns)
    results = set(find_run_files(output_dir, RESULT_FILES)) & set(found)
    if resuming:
        if not results:  # nothing to continue: a dead run's steps would mix with the new run's
            _set_aside(output_dir, found)
        return []
    if results and not overwrite:
        shown = sorted(results)
        text = ", ".join(str(p.relative_to(output_dir)) for p in shown[:4]) + (", ..." if len(shown) > 4 else "")
        raise RunExistsError(
            f"output_dir {output_dir} holds a previous run ({text}): continue it with --resume true, "
            "train into a new --output_dir, or replace it with --overwrite true"
        )
    if not overwrite:
        _set_aside(output_dir, found)
        return []
    for path in found:
        path.unlink(missing_ok=True)
    return found


def prepare_output_dir(
    output_dir: str | os.PathLike,
    resume: Any = False,
    overwrite: Any = False,
    patterns: Sequence[str] = RUN_FILES,
    lock: OutputDirLock | None = None,
) -> Path:
    """Refuse, or clear with ``overwrite``, an ``output_dir`` that holds a previous run; a resumed run goes on.

    A missing or empty folder, or one without weights or metrics (:data:`RESULT_FILES`), is fine: the
    leftovers of a run that died before its first checkpoint are set aside (event files moved to
    ``aborted/<time>/``, temporaries deleted), also when ``resume: true`` finds no checkpoint to continue.
    With ``overwrite`` only the previous run's files are removed (other files in the folder stay). Rank 0
    checks and deletes; its answer (or its error) is broadcast, so no rank waits on one that stopped.

    Args:
        output_dir: the run's output folder.
        resume: the bundle's ``resume`` setting (see :func:`~brats_cggm.engine.resume.resolve_resume_path`);
            any value but off continues what is there.
        overwrite: remove a previous run's files instead of refusing.
        patterns: glob patterns, relative to ``output_dir``, of the files a run writes.
        lock: the run's :class:`OutputDirLock`, taken first, before anything is looked at or removed (a
            refused run releases it again, so it leaves nothing behind).

    Returns:
        ``output_dir``.

    Raises:
        OutputDirInUseError: another live run holds ``lock``.
        RunExistsError: ``output_dir`` holds a previous run and neither ``resume`` nor ``overwrite`` is set.
        ValueError: ``overwrite`` is neither true nor false.
    """
    output_dir = Path(output_dir)
    overwrite = _flag(overwrite, "overwrite")
    if lock is None:
        return _prepare(output_dir, resume, overwrite, patterns)
    lock.acquire()
    try:
        return _prepare(output_dir, resume, overwrite, patterns)
    except BaseException:
        lock.release()
        raise


def _prepare(output_dir: Path, resume: Any, overwrite: bool, patterns: Sequence[str]) -> Path:
    path, required = resolve_resume_path(resume, output_dir / _CHECKPOINT)
    if required:  # an explicit checkpoint: the folder is continued whatever it holds
        return output_dir
    outcome: list[Any] = [None]  # the number of files removed, or rank 0's error
    if is_main_process():  # rank 0 alone looks at the folder: other nodes may see it late (NFS caches)
        try:
            continued = path is not None and path.exists()
            removed = [] if continued else _decide(output_dir, overwrite, path is not None, patterns)
            outcome = [len(removed)]
            if removed:
                logger.info("overwrite: removed %d file(s) of the previous run in %s", len(removed), output_dir)
        except Exception as exc:
            outcome = [exc]
    if get_world_size() > 1:
        dist.broadcast_object_list(outcome, src=0)
    if isinstance(outcome[0], Exception):
        raise outcome[0]
    return output_dir


class OutputDirLock:
    """The lock of the run training in ``output_dir``: one run at a time in a folder.

    Taken in the bundle's ``initialize`` before anything writes to the folder, released in its
    ``finalize``; also released when the process exits on an exception (``atexit``), and the kernel drops
    it when the process dies (a stale lock file is taken over by the next run, with a log line). Rank 0
    holds the file; every rank gets its answer, so all go on or all stop.

    Args:
        output_dir: the run's output folder (created when missing).

    Example (a bundle)::

        output_dir_lock: {_target_: brats_cggm.engine.output_dir.OutputDirLock, output_dir: "@output_dir"}
        initialize:
          - {_target_: brats_cggm.engine.output_dir.prepare_output_dir, output_dir: "@output_dir",
             resume: "@resume", overwrite: "@overwrite", lock: "@output_dir_lock"}
        finalize: ["$@output_dir_lock.release()"]
    """

    #: The lock each folder's run holds in this process, by folder.
    _held: ClassVar[dict[str, OutputDirLock]] = {}

    def __init__(self, output_dir: str | os.PathLike) -> None:
        self.output_dir = Path(output_dir)
        self._lock = FileLock(self.output_dir / LOCK_FILE, f"output_dir {self.output_dir}")

    @property
    def held(self) -> bool:
        """Whether this process holds the lock (rank 0 only, under DDP)."""
        return self._lock.held

    def acquire(self) -> OutputDirLock:
        """Take the folder for this run on rank 0; every rank raises if another live run holds it.

        Returns:
            ``self``.

        Raises:
            OutputDirInUseError: another live run, not one that launched this process, trains in ``output_dir``;
                the message names it (host, PID, start time, command).
        """
        outcome: list[Any] = [None]  # rank 0's refusal message, if any
        if is_main_process():
            try:
                self.output_dir.mkdir(parents=True, exist_ok=True)
                key = str(self.output_dir.resolve())
                earlier = self._held.get(key)
                if earlier is not None and earlier is not self:
                    # runs in one process follow each other: one that failed without finalize is over
                    logger.warning("%s: taking over the lock of an earlier run in this process", self.output_dir)
                    earlier.release()
                self._lock.acquire(timeout_s=0)
                self._held[key] = self
                atexit.register(self.release)
            except LockHeldError as exc:
                if launched_this_process(exc.holder):
                    # the launcher waits for this run (it initialised the config, then started the run): not a
                    # second run beside this one; it keeps the lock, this run trains under it
                    logger.warning(
                        "%s: the lock is held by %s, which launched this run; training under its lock",
                        self.output_dir,
                        describe_holder(exc.holder),
                    )
                else:
                    outcome = [f"{exc}: wait for it to end, or train into another --output_dir"]
        if get_world_size() > 1:
            dist.broadcast_object_list(outcome, src=0)
        if outcome[0] is not None:
            raise OutputDirInUseError(outcome[0])
        return self

    def release(self) -> None:
        """Release the lock and delete the lock file (a no-op when not held)."""
        if self._lock.held:
            atexit.unregister(self.release)
            self._lock.release()
            key = str(self.output_dir.resolve())
            if self._held.get(key) is self:
                del self._held[key]
