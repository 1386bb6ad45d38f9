"""Reading the scalars of a run's TensorBoard event files (``events.out.tfevents.*``), the one reader of them."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "EVENT_FILE_PATTERN",
    "read_scalars",
]

#: The glob of TensorBoard event files in a log folder.
EVENT_FILE_PATTERN = "events.out.tfevents.*"


def read_scalars(log_dir: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
    """Every scalar written to the event files of ``log_dir`` (all of them, none sampled away).

    Args:
        log_dir: a folder holding ``events.out.tfevents.*`` (a training ``output_dir``).

    Returns:
        tag → ``[(step, value), ...]`` over all the folder's event files, in step order; empty without event files.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    series: dict[str, list[tuple[int, float]]] = {}
    for event_file in sorted(Path(log_dir).glob(EVENT_FILE_PATTERN)):
        accumulator = EventAccumulator(str(event_file), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            series.setdefault(tag, []).extend((int(e.step), float(e.value)) for e in accumulator.Scalars(tag))
    return {tag: sorted(points) for tag, points in series.items()}
