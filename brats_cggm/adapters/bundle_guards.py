"""Checks the generic multimodal bundle (``bundles/multimodal_cggm``) runs on its settings.

They turn a bundle composed without a task overlay, or run without ``--dataset_dir``, into an error
that says what to add, instead of a failure deep inside config parsing.
"""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

from brats_cggm.adapters.errors import AdapterDataError

__all__ = ["missing_task_overlay", "require_dataset_dir"]


def missing_task_overlay(what: str = "data") -> NoReturn:
    """The placeholder of a setting that only a task overlay defines; evaluating it is an error.

    Args:
        what: the setting's name, for the message.

    Raises:
        ValueError: always, naming ``what`` and the overlays to add.
    """
    raise ValueError(
        f"the multimodal bundle needs a task overlay that defines {what!r}: add one of "
        "configs/tasks/{mosi,iemocap,food101}.yaml to --config_file, and give --dataset_dir"
    )


def require_dataset_dir(dataset_dir: str | Path | None) -> Path:
    """``dataset_dir`` as a path, checked to exist.

    Args:
        dataset_dir: the bundle's ``--dataset_dir`` (None, ``""`` or ``"None"`` when it was not given).

    Returns:
        The path, with ``~`` expanded.

    Raises:
        ValueError: when the bundle was run without ``--dataset_dir``.
        AdapterDataError: when the path does not exist.
    """
    if dataset_dir in (None, "", "None"):
        raise ValueError("give the data set with --dataset_dir PATH (a MOSI/IEMOCAP pickle or a data set folder)")
    path = Path(dataset_dir).expanduser()
    if not path.exists():
        raise AdapterDataError(f"dataset_dir does not exist: {path}")
    return path
