"""Resident memory of a whole process tree (a run, its DataLoader workers, its cache-building processes).

A process's own peak (``VmHWM``) misses its children, and summing the children's peaks adds maxima reached at
different times. :class:`TreePeakSampler` instead samples the tree every ``interval`` seconds and keeps the
peak of the sums, split by page kind as ``/proc/<pid>/status`` reports them:

- ``anon``: ``RssAnon``, the private heap (numpy and torch arrays, Python objects): what grows with the data if
  anything per case is kept;
- ``file``: ``RssFile``, file-backed pages (shared libraries, memory-mapped cache entries): the kernel can drop
  them under pressure, and pages shared by several processes are counted once per process;
- ``shmem``: ``RssShmem`` (shared memory, e.g. tensors a DataLoader worker hands to its parent).

Linux only (``/proc``); elsewhere the samples are empty and the peaks stay 0.
"""

from __future__ import annotations

import threading
from pathlib import Path

__all__ = ["KINDS", "TreePeakSampler", "process_memory", "tree_memory", "tree_pids"]

#: The page kinds summed over the tree, by ``/proc/<pid>/status`` field.
KINDS = {"anon": "RssAnon", "file": "RssFile", "shmem": "RssShmem"}


def tree_pids(root: int) -> list[int]:
    """``root`` and all its live descendants (through ``/proc/<pid>/task/<tid>/children``).

    Args:
        root: the tree's root process id.

    Returns:
        The process ids, ``root`` first; processes that exit while they are listed are left out.
    """
    pids, stack = [], [root]
    while stack:
        pid = stack.pop()
        pids.append(pid)
        try:
            tasks = list(Path(f"/proc/{pid}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                stack += [int(c) for c in (task / "children").read_text().split()]
            except (OSError, ValueError):
                pass
    return pids


def process_memory(pid: int) -> dict[str, int]:
    """One process's resident memory by page kind, in bytes (empty for a process that is gone).

    Args:
        pid: the process id.

    Returns:
        ``{"anon": ..., "file": ..., "shmem": ...}`` (see :data:`KINDS`), or ``{}``.
    """
    fields = {field: kind for kind, field in KINDS.items()}
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                name = line.split(":", 1)[0]
                if name in fields:
                    out[fields[name]] = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return {}
    return out


def tree_memory(root: int) -> dict[str, int]:
    """The resident memory of ``root`` and its descendants, summed by page kind.

    Args:
        root: the tree's root process id.

    Returns:
        ``anon``, ``file``, ``shmem`` and ``total`` in bytes, and ``processes`` (how many were read).
    """
    sums = dict.fromkeys(KINDS, 0)
    processes = 0
    for pid in tree_pids(root):
        memory = process_memory(pid)
        if memory:
            processes += 1
            for kind, value in memory.items():
                sums[kind] += value
    return {**sums, "total": sum(sums.values()), "processes": processes}


class TreePeakSampler:
    """Samples a process tree's memory in a background thread and keeps each sum's peak.

    Use as a context manager around the wait for the root process. Each kind's peak is taken on its own
    (the anonymous peak and the file-backed peak may come from different samples); ``total`` is the peak of
    the sample sums. A peak shorter than ``interval`` can be missed: the figures are lower bounds.

    Args:
        root: the tree's root process id.
        interval: seconds between samples.
    """

    def __init__(self, root: int, interval: float = 0.05) -> None:
        self.root, self.interval = root, float(interval)
        self.peaks: dict[str, int] = {**dict.fromkeys(KINDS, 0), "total": 0, "processes": 0}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tree-peak-sampler", daemon=True)

    def sample(self) -> dict[str, int]:
        """Read the tree once and fold the sums into the peaks.

        Returns:
            This sample's sums (see :func:`tree_memory`).
        """
        now = tree_memory(self.root)
        if now["processes"]:
            self.samples += 1
            for key, value in now.items():
                self.peaks[key] = max(self.peaks[key], value)
        return now

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> TreePeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
