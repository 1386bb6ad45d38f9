"""Files crafted to run code when unpickled: what every reader of weights must refuse without running it."""

from __future__ import annotations

from pathlib import Path

import torch

__all__ = ["OpensAFile", "code_running_checkpoint", "unsafe_advice"]


class OpensAFile:
    """Unpickling this runs ``open(path, "w")``: code, not data; the file appearing shows that it ran."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def code_running_checkpoint(path: Path, marker: Path, zipped: bool = True, **entries) -> Path:
    """Write, with ``torch.save``, a dict whose ``"trainer"`` entry creates ``marker`` when unpickled.

    Args:
        path: the file to write.
        marker: the file unpickling would create.
        zipped: the zip format (torch >= 1.6), else the legacy one.
        entries: more entries of the dict (e.g. ``network={}``).

    Returns:
        ``path``.
    """
    torch.save({"trainer": OpensAFile(marker), **entries}, path, _use_new_zipfile_serialization=zipped)
    return path


def unsafe_advice(text: str) -> list[str]:
    """The pieces of torch's advice to load a refused file anyway that ``text`` repeats (none, for our messages)."""
    phrases = ("weights_only", "safe_globals", "trusted source", "trust the source", "arbitrary code execution")
    return [phrase for phrase in phrases if phrase in text]
