"""A training run's ``output_dir``: a new run never silently replaces the files of a previous one.

Called first in a training bundle's ``initialize`` (after the process group exists), before anything
writes to ``output_dir``. A folder holding a previous run's files is refused unless the run resumes it
(``resume``) or is told to replace it (``overwrite``, which removes those files first). Rank 0 decides
and deletes; the other ranks get its answer, so every rank goes on or stops together.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch.distributed as dist

from brats_cggm.core.distributed import get_world_size, is_main_process
from brats_cggm.engine.resume import resolve_resume_path

__all__ = ["RUN_FILES", "RunExistsError", "find_run_files", "prepare_output_dir"]

logger = logging.getLogger(__name__)

#: What a training run writes into its ``output_dir`` (glob patterns), temporaries of killed writes included.
RUN_FILES = (
    "metrics.json",
    ".metrics.json.*.tmp",
    "events.out.tfevents.*",
    "models/*.pt",
    "models/.*.tmp",
)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off", "none", "null"}


class RunExistsError(FileExistsError):
    """``output_dir`` holds a previous run, and neither resuming nor overwriting was asked for."""


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


def _decide(output_dir: Path, overwrite: bool, patterns: Sequence[str]) -> list[Path]:
    found = find_run_files(output_dir, patterns)
    if found and not overwrite:
        shown = ", ".join(str(p.relative_to(output_dir)) for p in found[:4]) + (", ..." if len(found) > 4 else "")
        raise RunExistsError(
            f"output_dir {output_dir} holds a previous run ({shown}): continue it with --resume true, "
            "train into a new --output_dir, or replace it with --overwrite true"
        )
    for path in found:
        path.unlink(missing_ok=True)
    return found


def prepare_output_dir(
    output_dir: str | os.PathLike, resume: Any = False, overwrite: Any = False, patterns: Sequence[str] = RUN_FILES
) -> Path:
    """Refuse, or clear with ``overwrite``, an ``output_dir`` that holds a previous run; a resumed run goes on.

    A missing or empty folder, or one without any of ``patterns``' files, is fine. With ``overwrite``
    only the previous run's files are removed (other files in the folder stay). Rank 0 checks and
    deletes; its answer (or its error) is broadcast, so no rank waits on one that stopped.

    Args:
        output_dir: the run's output folder.
        resume: the bundle's ``resume`` setting (see :func:`~brats_cggm.engine.resume.resolve_resume_path`);
            any value but off continues what is there.
        overwrite: remove a previous run's files instead of refusing.
        patterns: glob patterns, relative to ``output_dir``, of the files a run writes.

    Returns:
        ``output_dir``.

    Raises:
        RunExistsError: ``output_dir`` holds a previous run and neither ``resume`` nor ``overwrite`` is set.
        ValueError: ``overwrite`` is neither true nor false.
    """
    output_dir = Path(output_dir)
    overwrite = _flag(overwrite, "overwrite")
    if resolve_resume_path(resume, output_dir)[0] is not None:
        return output_dir
    outcome: list[Any] = [None]  # the number of files removed, or rank 0's error
    if is_main_process():
        try:
            removed = _decide(output_dir, overwrite, patterns)
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
