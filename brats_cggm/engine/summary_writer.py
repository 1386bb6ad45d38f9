"""A TensorBoard ``SummaryWriter`` that writes nothing until its first event.

torch's ``SummaryWriter`` creates its folder and event file when it is built, so parsing a bundle's
``summary_writer`` key would write into ``output_dir``. Bundle configs are pure descriptions (parsing any key
writes nothing; docs/inference.md), so the bundles build :class:`DeferredSummaryWriter`, which opens its
event file at the first ``add_*`` call (as torch's own writer does again after ``close()``) or when the
bundle's ``initialize`` step calls :meth:`DeferredSummaryWriter.open`, so a run's event file exists from its start.
"""

from __future__ import annotations

from typing import Any

from torch.utils.tensorboard import SummaryWriter

__all__ = [
    "DeferredSummaryWriter",
]


class DeferredSummaryWriter(SummaryWriter):
    """``SummaryWriter`` whose folder and event file are created at its first event, not when it is built.

    Args:
        args: ``SummaryWriter``'s positional arguments (``log_dir`` first).
        kwargs: ``SummaryWriter``'s keyword arguments.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._building = True
        super().__init__(*args, **kwargs)
        self._building = False

    def open(self) -> None:
        """Creates the folder and the event file now (the bundles' ``initialize`` step: a run that fails at its
        first step still leaves its event file, which the next run into the folder archives)."""
        self._get_file_writer()

    def _get_file_writer(self) -> Any:
        # SummaryWriter.__init__ opens the file writer eagerly; every add_* call (re)opens it through here
        if self._building:
            return None
        return super()._get_file_writer()
