"""Plot one axial slice of each modality and the labels for a few anatomical phantom cases.

    python scripts/plot_phantoms.py --out docs/anatomical_phantoms.png --seeds 0 1 2 --spacing 1
    python scripts/plot_phantoms.py --out docs/mismatch_phantoms.png --seeds 0 4 --variant t2-flair-mismatch

Needs matplotlib (the ``plots`` extra) and nilearn (the ``anatomy`` extra): ``pip install -e ".[plots,anatomy]"``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from brats_cggm.brats.phantoms.anatomical import VARIANTS, generate_anatomical_case
from brats_cggm.brats.phantoms.geometric import MODALITIES

__all__ = ["main", "plot_cases"]

_LABEL_COLOURS = {1: (0.9, 0.1, 0.1), 2: (0.1, 0.8, 0.1), 4: (1.0, 0.9, 0.0)}


def _display(image: np.ndarray) -> np.ndarray:
    """An axial BraTS slice (X, Y) turned for display: anterior up, patient's right on the left (radiological)."""
    return np.rot90(image[::-1, :], k=1)[::-1, :]


def plot_cases(seeds: Sequence[int], spacing: float, out: Path, variant: str = "default") -> None:
    """Write a figure: one row per case, columns FLAIR, T1, T1ce, T2 and the labels over T1ce.

    Args:
        seeds: the cases' seeds.
        spacing: voxel size in mm.
        out: the PNG to write.
        variant: the phantom variant (``generate_anatomical_case``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(seeds), 5, figsize=(12.5, 2.9 * len(seeds)), facecolor="black")
    axes = np.atleast_2d(axes)
    for row, seed in enumerate(seeds):
        case = generate_anatomical_case(seed, spacing, variant)
        seg = case["seg"]
        # The axial slice through the most tumour voxels.
        z = int(np.argmax((seg > 0).sum(axis=(0, 1))))
        for col, modality in enumerate(MODALITIES):
            image = case[modality][:, :, z].astype(np.float32)
            vmax = np.percentile(case[modality][case[modality] > 0], 99.5)
            axes[row, col].imshow(_display(image), cmap="gray", vmin=0, vmax=vmax, interpolation="nearest")
            axes[row, col].set_title(f"seed {seed}: {modality}", color="white", fontsize=9)
        base = case["t1ce"][:, :, z].astype(np.float32)
        base /= max(float(np.percentile(case["t1ce"][case["t1ce"] > 0], 99.5)), 1.0)
        rgb = np.repeat(np.clip(base, 0, 1)[..., None], 3, axis=-1)
        for label, colour in _LABEL_COLOURS.items():
            rgb[seg[:, :, z] == label] = 0.25 * rgb[seg[:, :, z] == label] + 0.75 * np.asarray(colour)
        axes[row, 4].imshow(_display(rgb), interpolation="nearest")
        axes[row, 4].set_title("labels: 1 red, 2 green, 4 yellow", color="white", fontsize=9)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80, facecolor="black")
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python scripts/plot_phantoms.py [--out PNG] [--seeds S ...] [--spacing MM] [--variant V]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/anatomical_phantoms.png"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--spacing", type=float, default=1.0, help="voxel size in mm (default: 1)")
    parser.add_argument("--variant", choices=VARIANTS, default="default", help="phantom variant (default: default)")
    args = parser.parse_args(argv)
    plot_cases(args.seeds, args.spacing, args.out, args.variant)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
