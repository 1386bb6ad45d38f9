"""Plot per-modality curves (auxiliary Dice, CGGM coefficients) of training runs from their TensorBoard logs.

    python scripts/plot_modality_curves.py runs/compare/joint/seed0 runs/compare/cggm/seed0 --out curves.png

Needs matplotlib (not a dependency of the package).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

PANELS = [
    ("train/modality_dice", "auxiliary Dice (train batches)"),
    ("cggm/B", "CGGM coefficient B"),
    ("grad_norm", "encoder gradient norm"),
]


def read_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """All scalar series of the event files in ``run_dir``: tag → [(step, value)]."""
    series: dict[str, list[tuple[int, float]]] = {}
    for event_file in sorted(run_dir.glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(event_file), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            series.setdefault(tag, []).extend((e.step, e.value) for e in accumulator.Scalars(tag))
    return series


def smooth(values: list[float], weight: float = 0.9) -> list[float]:
    out, last = [], values[0] if values else 0.0
    for v in values:
        last = weight * last + (1 - weight) * v
        out.append(last)
    return out


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("modality_curves.png"))
    args = parser.parse_args()
    runs = {run: read_scalars(run) for run in args.runs}
    fig, axes = plt.subplots(len(PANELS), len(runs), figsize=(5 * len(runs), 3.2 * len(PANELS)), squeeze=False)
    for col, (run, series) in enumerate(runs.items()):
        for row, (prefix, title) in enumerate(PANELS):
            ax = axes[row][col]
            for tag in sorted(t for t in series if t.startswith(prefix + "/")):
                steps, values = zip(*sorted(series[tag]))
                ax.plot(steps, smooth(list(values)), label=tag.rsplit("/", 1)[-1])
            ax.set_title(f"{run.parent.name}/{run.name}: {title}", fontsize=9)
            ax.set_xlabel("iteration")
            if ax.lines:
                ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
