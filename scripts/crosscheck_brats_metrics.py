"""Compare brats_cggm's challenge metrics with the official BraTS evaluator on random multi-lesion cases.

The official evaluator is ``brats-evaluation`` (PyPI, built on ``panoptica``). It is used from this interpreter when
importable, else from the interpreter given with ``--official-python`` (a separate virtual environment, e.g.
``python3 -m venv /work/venv-official && /work/venv-official/bin/pip install brats-evaluation``):

    python scripts/crosscheck_brats_metrics.py --official-python /work/venv-official/bin/python --cases 6

Prints, per metric, the largest absolute difference over cases and regions (values that are NaN or infinite on
both sides count as equal) and exits with 1 if any exceeds ``--tolerance``. Two documented conventions are
applied to the official values first: an infinite global HD95 is 373 mm, as in the official CSV; a region empty in
both prediction and reference, NaN in the official evaluator, is left out of the global metrics (here Dice 1,
HD95 0, NSD 1) and counted. On an anisotropic grid the official lesion metrics use the voxel spacing in the reverse
axis order (panoptica pairs SimpleITK's (z, y, x) array with its (x, y, z) spacing); ``--reverse-spacing``
reproduces that, to show that this is the only difference.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from brats_cggm.brats.metrics.lesion import case_challenge_metrics
from brats_cggm.brats.metrics.surface import OFFICIAL_HD95_MAX_MM

_COMPARED = (
    "tp",
    "fp",
    "fn",
    "prec",
    "rec",
    "rq",
    "sq_dsc",
    "sq_dsc_std",
    "sq_hd95",
    "sq_hd95_std",
    "sq_nsd",
    "sq_nsd_std",
    "pq_dsc",
    "global_bin_dsc",
    "global_bin_hd95",
    "global_bin_nsd",
)

_OFFICIAL_SNIPPET = """
import json, sys, warnings
warnings.simplefilter("ignore")
from brats_evaluation import config_path, evaluate_single_exam
from panoptica import Panoptica_Evaluator
evaluator = Panoptica_Evaluator.load_from_config(str(config_path("gli")))
out = {}
for pred, ref in json.loads(sys.argv[1]):
    result = evaluate_single_exam(pred, ref, ref, evaluator)
    out[ref] = {k: {m: v for m, v in r.items() if not isinstance(v, list)} for k, r in result.items()
                if isinstance(r, dict)}
print(json.dumps(out, default=float))
"""


def _blob(shape: tuple[int, ...], center: np.ndarray, radii: np.ndarray) -> np.ndarray:
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, center, radii)) <= 1.0


def random_case(rng: np.random.Generator, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A reference with 1-4 tumours (edema around a core around an enhancing rim) and a perturbed prediction."""
    ref = np.zeros(shape, np.uint8)
    pred = np.zeros(shape, np.uint8)
    for _ in range(int(rng.integers(1, 5))):
        center = rng.uniform(0.2, 0.8, 3) * np.asarray(shape)
        radius = rng.uniform(3, 9, 3)
        for labels, jitter in ((ref, 0.0), (pred, 1.5)):
            c = center + rng.normal(0, jitter, 3)
            r = radius * (1 + rng.normal(0, 0.1 if jitter else 0, 3))
            if jitter and rng.random() < 0.15:
                continue  # a missed tumour
            labels[_blob(shape, c, r * 1.6) & (labels == 0)] = 2
            labels[_blob(shape, c, r)] = 3
            labels[_blob(shape, c, r * 0.6)] = 1
    # false positives and a resection cavity
    for _ in range(int(rng.integers(0, 3))):
        pred[_blob(shape, rng.uniform(0.1, 0.9, 3) * np.asarray(shape), rng.uniform(1, 3, 3))] = 3
    if rng.random() < 0.5:
        c, r = rng.uniform(0.2, 0.8, 3) * np.asarray(shape), rng.uniform(2, 5, 3)
        ref[_blob(shape, c, r)] = 4
        pred[_blob(shape, c + 1, r)] = 4
    return pred, ref


def _official(pairs: list[tuple[str, str]], python: str | None) -> dict:
    try:
        import brats_evaluation  # noqa: F401
    except ImportError:
        if python is None:
            sys.exit("brats-evaluation is not importable here; pass --official-python of an environment that has it")
        command = [python, "-c", _OFFICIAL_SNIPPET, json.dumps(pairs)]
    else:
        command = [sys.executable, "-c", _OFFICIAL_SNIPPET, json.dumps(pairs)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _difference(a: float, b: float) -> float:
    a, b = float(a), float(b)
    if (math.isnan(a) and math.isnan(b)) or (math.isinf(a) and math.isinf(b) and a == b):
        return 0.0
    if not (math.isfinite(a) and math.isfinite(b)):
        return math.inf
    return abs(a - b)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shape", type=int, nargs=3, default=(96, 96, 64))
    parser.add_argument("--spacing", type=float, nargs=3, default=(1.0, 1.0, 1.0), help="voxel size (mm)")
    parser.add_argument("--reverse-spacing", action="store_true", help="use the spacing as the official evaluator does")
    parser.add_argument("--official-python", default=None)
    parser.add_argument("--tolerance", type=float, default=1e-9)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        pairs, ours, seconds = [], {}, []
        for i in range(args.cases):
            pred, ref = random_case(rng, tuple(args.shape))
            affine = np.diag([*args.spacing, 1.0])
            paths = [str(Path(tmp) / f"{kind}_{i:05d}.nii.gz") for kind in ("pred", "ref")]
            for path, data in zip(paths, (pred, ref)):
                nib.save(nib.Nifti1Image(data, affine), path)
            pairs.append((paths[0], paths[1]))
            # the official global metrics ignore the spacing (see brats_cggm.brats.metrics.surface)
            spacing = tuple(args.spacing)[:: -1 if args.reverse_spacing else 1]
            start = time.perf_counter()
            ours[paths[1]] = case_challenge_metrics(pred, ref, spacing, "brats2023", global_in_voxels=True)
            seconds.append(time.perf_counter() - start)
        official = _official(pairs, args.official_python)
    worst: dict[str, float] = dict.fromkeys(_COMPARED, 0.0)
    n_compared, both_empty = 0, 0
    for ref_path, regions in ours.items():
        for region, values in regions.items():
            theirs = dict(official[ref_path][region])
            n_compared += 1
            empty = values["n_ref_instances"] + values["n_pred_instances"] == 0
            both_empty += empty
            if theirs.get("global_bin_hd95") == math.inf:
                theirs["global_bin_hd95"] = OFFICIAL_HD95_MAX_MM
            for key in _COMPARED:
                if empty and key.startswith("global_bin_"):
                    continue
                other = theirs.get(key)
                other = math.nan if other is None else other
                worst[key] = max(worst[key], _difference(values[key], other))
    print(f"{args.cases} cases, shape {tuple(args.shape)}, spacing {tuple(args.spacing)}", end="")
    print(" (reversed for ours)" if args.reverse_spacing else "")
    print(
        f"regions {list(next(iter(ours.values())))}; ours: {np.mean(seconds):.2f} s per case (max {max(seconds):.2f})"
    )
    print(f"{n_compared} case-regions compared, {both_empty} empty on both sides (global metrics not compared)")
    print(f"{'metric':<18}max |ours - official|")
    for key, value in worst.items():
        print(f"{key:<18}{value:.3g}")
    return 0 if all(v <= args.tolerance for v in worst.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
