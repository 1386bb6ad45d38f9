"""Figures of a BraTS comparison (:mod:`brats_cggm.experiments.brats_comparison`).

- ``modalities.png``: per modality, one bar per method (mean ± std over seeds) of the Shapley contribution, the
  encoder gap and the auxiliary head's Dice; one column of panels per optimiser.
- ``subset_dice.png``: the mean Dice of every non-empty modality subset (the others absent, as the rows' ``absent``
  says) per method, as a heat map.
- ``seeds.png``: per metric (the tests' family, and its held-out test columns when measured), each seed's value as a
  point beside the method's mean (a bar), so the spread behind a mean ± std is visible.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from brats_cggm.brats.data.discovery import DEFAULT_MODALITIES
from brats_cggm.core.figures import import_pyplot, save_png
from brats_cggm.experiments.comparison_columns import (
    gap_key,
    modality_dice_key,
    rows_absence,
    shapley_key,
    subset_dice_key,
)
from brats_cggm.experiments.comparison_statistics import DEFAULT_FAMILY, held_out_key
from brats_cggm.experiments.reports import summarize

__all__ = ["MODALITY_PANELS", "PLOT_NAMES", "write_comparison_plots"]

#: What :func:`write_comparison_plots` may write.
PLOT_NAMES = ("modalities.png", "subset_dice.png", "seeds.png")

#: (a modality's column, panel title): the rows of ``modalities.png``.
MODALITY_PANELS: tuple[tuple[Callable[[str], str], str], ...] = (
    (shapley_key, "Shapley contribution to the mean Dice"),
    (gap_key, "encoder gap: unimodal probe − this run's probe"),
    (modality_dice_key, "auxiliary head Dice"),
)


def _by_optimizer(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Optimiser → the :func:`summarize` entries of its multimodal runs, each labelled by its balancer."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        if row.get("modalities") is None:
            groups.setdefault(row.get("optimizer", "adamw"), []).append(row)
    labelled = {}
    for optimizer, runs in groups.items():
        balancer = {run["method"]: run.get("balancer", run["method"]) for run in runs}
        labelled[optimizer] = [{**entry, "label": balancer[entry["method"]]} for entry in summarize(runs)]
    return labelled


def _modality_figure(plt: Any, groups: Mapping[str, list[dict[str, Any]]], modalities: Sequence[str]) -> Any:
    panels = [
        (key, title)
        for key, title in MODALITY_PANELS
        if any(key(m) in entry for entries in groups.values() for entry in entries for m in modalities)
    ]
    if not panels:
        return None
    figure, axes = plt.subplots(
        len(panels), len(groups), figsize=(6 * len(groups), 3 * len(panels)), squeeze=False, sharey="row"
    )
    for col, (optimizer, entries) in enumerate(groups.items()):
        width = 0.8 / len(entries)
        for row, (key, title) in enumerate(panels):
            axis = axes[row][col]
            for j, entry in enumerate(entries):
                stats = [entry.get(key(m), (np.nan, 0.0)) for m in modalities]
                x = np.arange(len(modalities)) + (j - (len(entries) - 1) / 2) * width
                axis.bar(x, [s[0] for s in stats], width, yerr=[s[1] or 0.0 for s in stats], label=entry["label"])
            axis.axhline(0.0, color="k", linewidth=0.5)
            axis.set_xticks(np.arange(len(modalities)), list(modalities))
            axis.set_title(f"{optimizer}: {title}", fontsize=9)
        axes[0][col].legend(fontsize=6, ncol=2)
    return figure


def _subset_figure(plt: Any, groups: Mapping[str, list[dict[str, Any]]], absent: str) -> Any:
    entries = [(f"{entry['label']} ({optimizer})", entry) for optimizer, items in groups.items() for entry in items]
    subsets = list(dict.fromkeys(k for _, e in entries for k in e if k.startswith(subset_dice_key(""))))
    if not subsets:
        return None
    values = np.array([[entry.get(s, (np.nan, 0.0))[0] for s in subsets] for _, entry in entries])
    figure, axis = plt.subplots(figsize=(0.7 * len(subsets) + 3, 0.4 * len(entries) + 2))
    image = axis.imshow(values, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    axis.set_xticks(np.arange(len(subsets)), [s.removeprefix(subset_dice_key("")) for s in subsets], rotation=90)
    axis.set_yticks(np.arange(len(entries)), [name for name, _ in entries])
    for i, j in np.ndindex(values.shape):
        if np.isfinite(values[i, j]):
            color = "w" if values[i, j] < 0.5 else "k"
            axis.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", color=color, fontsize=6)
    figure.colorbar(image, ax=axis, label=f"mean Dice, absent = {absent}")
    return figure


def _seed_figure(plt: Any, rows: Sequence[Mapping[str, Any]], metrics: Sequence[str]) -> Any:
    """Per metric, one column of points per method (its seeds, labelled) beside a bar at their mean."""
    multimodal = [row for row in rows if row.get("modalities") is None]
    columns = [c for m in metrics for c in (m, held_out_key(m)) if any(c in r["validation"] for r in multimodal)]
    if not columns:
        return None
    methods = list(dict.fromkeys(row["method"] for row in multimodal))
    figure, axes = plt.subplots(1, len(columns), figsize=(max(4.0, 0.8 * len(methods) + 2) * len(columns), 3.5))
    for axis, column in zip(np.atleast_1d(axes), columns):
        for x, method in enumerate(methods):
            seeds = [
                (r["seed"], r["validation"][column])
                for r in multimodal
                if r["method"] == method and column in r["validation"]
            ]
            if not seeds:
                continue
            values = [value for _, value in seeds]
            axis.hlines(np.mean(values), x - 0.3, x + 0.05, color="k", linewidth=2)  # the mean
            offsets = x + 0.15 + 0.1 * np.linspace(-1, 1, len(values)) if len(values) > 1 else [x + 0.15]
            axis.scatter(offsets, values, s=14, zorder=3)
            for offset, (seed, value) in zip(offsets, seeds):
                axis.annotate(str(seed), (offset, value), xytext=(2, 2), textcoords="offset points", fontsize=5)
        axis.set_xticks(np.arange(len(methods)), methods, rotation=45, ha="right", fontsize=7)
        axis.set_title(f"{column}: seeds (points, labelled) and mean (bar)", fontsize=8)
    return figure


def write_comparison_plots(
    rows: Sequence[Mapping[str, Any]],
    out_dir: str | Path,
    modalities: Sequence[str] = DEFAULT_MODALITIES,
    metrics: Sequence[str] = DEFAULT_FAMILY,
) -> list[Path]:
    """Draw the comparison's figures (the module docstring) from its rows, finished so far.

    Args:
        rows: :func:`~brats_cggm.experiments.brats_comparison.run_and_valuate`'s rows.
        out_dir: the comparison's folder.
        modalities: the modalities, in order.
        metrics: the columns of ``seeds.png`` (each also with its held-out test column, when measured).

    Returns:
        The files written: a figure without any data yet is not drawn.

    Raises:
        ImportError: without matplotlib.
    """
    plt = import_pyplot("the comparison plots")
    groups = _by_optimizer(rows)
    written = []
    for name, figure in (
        (PLOT_NAMES[0], _modality_figure(plt, groups, modalities) if groups else None),
        (PLOT_NAMES[1], _subset_figure(plt, groups, " + ".join(rows_absence(rows))) if groups else None),
        (PLOT_NAMES[2], _seed_figure(plt, rows, metrics) if groups else None),
    ):
        if figure is not None:
            figure.tight_layout()
            written.append(save_png(figure, Path(out_dir) / name))
            plt.close(figure)
    return written
