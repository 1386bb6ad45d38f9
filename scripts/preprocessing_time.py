"""Time the inference preprocessing of one case: the CPU chain against the device chain (docs/performance.md).

Usage::

    python scripts/preprocessing_time.py --work /tmp/preprocessing_time                 # device chain on CPU tensors
    python scripts/preprocessing_time.py --work /tmp/preprocessing_time --device cuda   # on the GPU

Writes one geometric phantom case (240x240x155 by default) unless it is there, reads and checks it once
(``BratsSegmenter.check``), then runs ``BratsSegmenter.preprocessing`` of both chains on the images read,
alternately in ABBA order, ``--repeats`` times after one untimed pass each; prints the medians and their
ratio (device chain / CPU chain) as one JSON line. On CUDA the clock stops after ``torch.cuda.synchronize``.
Resampling runs only where ``--pixdim`` differs from the phantom's 1 mm spacing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    """Run the measurement; returns (and prints) the medians in seconds and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="/tmp/preprocessing_time")
    parser.add_argument("--shape", type=int, nargs=3, default=(240, 240, 155))
    parser.add_argument("--pixdim", type=float, nargs=3, default=(1.0, 1.0, 1.0))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    import torch

    from brats_cggm.brats.inference.case_io import find_cases
    from brats_cggm.brats.inference.model_loading import InferenceSettings
    from brats_cggm.brats.inference.segmenter import BratsSegmenter
    from brats_cggm.brats.phantoms.geometric import write_phantom_dataset

    data = Path(args.work) / "x".join(str(s) for s in args.shape)
    if not data.is_dir():
        write_phantom_dataset(data, n=1, shape=tuple(args.shape))
    case = find_cases(next(p for p in sorted(data.iterdir()) if p.is_dir()))[0][0]
    device = torch.device(args.device)
    settings = InferenceSettings(roi_size=(16, 16, 16), preprocessing={"pixdim": tuple(args.pixdim)})
    segmenters = {
        where: BratsSegmenter(torch.nn.Identity(), settings, device=device, preprocess_on=where)
        for where in ("cpu", "device")
    }
    images = segmenters["cpu"].check(case)

    def run(segmenter: BratsSegmenter) -> float:
        start = time.perf_counter()
        segmenter.preprocessing(case, images)({"image": list(case.image)})
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    seconds: dict[str, list[float]] = {where: [] for where in segmenters}
    for segmenter in segmenters.values():
        run(segmenter)  # untimed: first-call costs (allocator, kernels)
    order = list(segmenters)
    for _ in range(args.repeats):
        for where in order:  # alternately, so that a change of load hits both
            seconds[where].append(run(segmenters[where]))
        order.reverse()  # and each goes first as often: the second of a pair may find memory the first freed
    cpu, on_device = (statistics.median(seconds[where]) for where in ("cpu", "device"))
    result = {"cpu_chain_s": cpu, "device_chain_s": on_device, "device_over_cpu": on_device / cpu}
    print(json.dumps({"device": str(device), "shape": list(args.shape), "repeats": args.repeats, **result}))
    return result


if __name__ == "__main__":
    main()
