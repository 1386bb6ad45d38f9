"""Plot per-modality curves (auxiliary Dice, CGGM coefficients) and validation Dice of training runs from their
TensorBoard logs.

    python scripts/plot_modality_curves.py runs/compare/joint/seed0 runs/compare/cggm/seed0 --out curves.png

Needs matplotlib, the ``plots`` extra: ``pip install -e ".[plots]"``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from brats_cggm.core.events import read_scalars
from brats_cggm.core.files import atomic_path

__all__ = ["PANELS", "main", "smooth"]

#: (tag prefix, panel title, x axis, smoothed): one row of panels per prefix, one line per ``<prefix>/<name>`` tag.
#: Training series are logged per iteration and smoothed; validation ones per epoch, a few points, drawn as they are.
PANELS = [
    ("train/modality_dice", "auxiliary Dice (train batches)", "iteration", True),
    ("cggm/B", "CGGM coefficient B", "iteration", True),
    ("grad_norm", "encoder gradient norm", "iteration", True),
    ("val/dice", "validation Dice (whole volumes)", "epoch", False),
]


def smooth(values: list[float], weight: float = 0.9) -> list[float]:
    """TensorBoard-style exponential moving average of ``values`` (the first value starts it)."""
    out, last = [], values[0] if values else 0.0
    for v in values:
        last = weight * last + (1 - weight) * v
        out.append(last)
    return out


def _tags(series: dict[str, list[tuple[int, float]]], prefix: str) -> list[str]:
    return sorted(t for t in series if t.startswith(prefix + "/"))


def _import_pyplot():
    try:
        import matplotlib
    except ImportError:
        raise SystemExit(
            'error: plot_modality_curves.py needs matplotlib; install the plots extra: pip install -e ".[plots]"'
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def main(argv: Sequence[str] | None = None) -> int:
    """Draw :data:`PANELS` (rows) for each run (columns) into one PNG; a panel no run has data for is left out.

    Args:
        argv: command-line arguments (``sys.argv[1:]`` when None).

    Returns:
        0 when the PNG was written, 1 on bad input (a run folder without event files, an existing output
        without ``--overwrite``).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="training output folders (with TensorBoard event files)")
    parser.add_argument("--out", type=Path, default=Path("modality_curves.png"), help="the PNG to write")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    args = parser.parse_args(argv)
    if args.out.exists() and not args.overwrite:
        print(f"error: {args.out} exists; pass --overwrite to replace it", file=sys.stderr)
        return 1
    for run in args.runs:
        if not any(run.glob("events.out.tfevents.*")):
            print(f"error: {run}: no TensorBoard event files (events.out.tfevents.*)", file=sys.stderr)
            return 1
    plt = _import_pyplot()
    runs = {run: read_scalars(run) for run in args.runs}
    # a panel no run has a series for (CGGM's B when every run is joint) would only be an empty frame
    panels = [panel for panel in PANELS if any(_tags(series, panel[0]) for series in runs.values())]
    if not panels:
        print(f"error: no run has a series of {[panel[0] for panel in PANELS]}", file=sys.stderr)
        return 1
    fig, axes = plt.subplots(len(panels), len(runs), figsize=(5 * len(runs), 3.2 * len(panels)), squeeze=False)
    for col, (run, series) in enumerate(runs.items()):
        for row, (prefix, title, x_label, smoothed) in enumerate(panels):
            ax = axes[row][col]
            for tag in _tags(series, prefix):
                steps, values = zip(*sorted(series[tag]))
                if smoothed:
                    ax.plot(steps, smooth(list(values)), label=tag.rsplit("/", 1)[-1])
                else:
                    ax.plot(steps, values, marker="o", label=tag.rsplit("/", 1)[-1])
            ax.set_title(f"{run.parent.name}/{run.name}: {title}", fontsize=9)
            ax.set_xlabel(x_label)
            if ax.lines:
                ax.legend(fontsize=7)
        counts = [f"{len(_tags(series, panel[0]))} {panel[0]}" for panel in PANELS]
        print(f"{run}: " + ", ".join(counts) + " series")
    fig.tight_layout()
    # written beside the target and renamed, so an interrupted run leaves no half-written PNG
    with atomic_path(args.out) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
