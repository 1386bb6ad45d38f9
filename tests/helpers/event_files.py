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


def custom_scalars_layouts(log_dir: Path) -> list[dict[str, dict[str, list[str]]]]:
    """Every custom-scalars layout written to the event files in ``log_dir``: category → chart title → tags."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.custom_scalar import layout_pb2

    layouts = []
    for event_file in sorted(log_dir.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(event_file)).Load():
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name != "custom_scalars":
                    continue
                layout = layout_pb2.Layout.FromString(value.tensor.string_val[0])
                layouts.append(
                    {c.title: {chart.title: list(chart.multiline.tag) for chart in c.chart} for c in layout.category}
                )
    return layouts
