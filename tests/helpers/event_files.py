"""Reading TensorBoard custom-scalars layouts in tests (scalars: :func:`brats_cggm.core.events.read_scalars`)."""

from __future__ import annotations

from pathlib import Path


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
