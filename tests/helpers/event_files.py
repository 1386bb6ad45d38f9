"""Reading TensorBoard event files in tests."""

from __future__ import annotations

from pathlib import Path


def scalar_values(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar written to the event files in ``log_dir``: ``{tag: [(step, value), ...]}`` in step order."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    values: dict[str, list[tuple[int, float]]] = {}
    for event_file in log_dir.glob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(event_file))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            values.setdefault(tag, []).extend((e.step, e.value) for e in accumulator.Scalars(tag))
    return {tag: sorted(points) for tag, points in values.items()}


def scalar_tags(log_dir: Path) -> set[str]:
    """Every scalar tag written to the event files in ``log_dir``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags: set[str] = set()
    for event_file in log_dir.glob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(event_file))
        accumulator.Reload()
        tags |= set(accumulator.Tags()["scalars"])
    return tags
