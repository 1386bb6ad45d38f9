"""Peak memory of the bundle's validation, case after case, on one disk cache entry validated N times.

    python scripts/validation_memory.py CACHE_DIR [--cases 4] [--release] [--trim] [--roi 96]

CACHE_DIR is a disk cache root holding a ``val-*`` folder (any bundle run builds one). The bundle's own
validation postprocessing and metrics run in an ignite ``SupervisedEvaluator``; the predictor is a stand-in
that returns the same five outputs (fused and four auxiliary heads, 3 channels each) as
``FusedAndAuxiliaryPredictor``, so the whole-volume buffers are the real ones while a case takes seconds. After
each case it prints the anonymous memory still held (``RssAnon``) and the peak resident memory during that
case (``VmHWM``, reset between cases). Set ``MALLOC_MMAP_THRESHOLD_`` or ``MALLOC_ARENA_MAX`` in the
environment to try glibc's settings (docs/performance.md, dataset_scale section).
"""

from __future__ import annotations

import argparse
import glob
import os
import sys

import torch
from torch import nn

from brats_cggm.core.resources import bundle_config

BUNDLE = bundle_config("brats_cggm", "train.yaml")


def _status() -> dict[str, float]:
    """``RssAnon`` and ``VmHWM`` of this process, in MB."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key = line.split(":")[0]
            if key in ("VmHWM", "RssAnon"):
                out[key] = int(line.split()[1]) / 1024
    return out


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


class StandInPredictor(nn.Module):
    """Five 3-channel outputs of the input's size, like ``FusedAndAuxiliaryPredictor``, for the price of a copy."""

    def __init__(self, modalities: tuple[str, ...] = ("flair", "t1ce", "t1", "t2")) -> None:
        super().__init__()
        self.modalities = modalities
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Args: x: ``(B, 4, *spatial)``. Returns: ``pred`` and ``pred_<modality>``, ``(B, 3, *spatial)``."""
        fused = x[:, :3] * self.scale
        return {"pred": fused, **{f"pred_{m}": fused * 0.5 for m in self.modalities}}


def main(argv: list[str] | None = None) -> int:
    """Validate one entry ``--cases`` times and print the memory after each case.

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        0.
    """
    from ignite.engine import Events
    from monai.bundle import ConfigParser
    from monai.data import DataLoader, Dataset
    from monai.engines import SupervisedEvaluator
    from monai.inferers import SlidingWindowInferer
    from monai.transforms import Compose

    from brats_cggm.brats.data.cache.disk import LoadCacheEntryd
    from brats_cggm.engine.validation import ReleaseIterationData

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("cache_dir")
    p.add_argument("--cases", type=int, default=4)
    p.add_argument("--release", action="store_true", help="ReleaseIterationData without malloc_trim")
    p.add_argument("--trim", action="store_true", help="ReleaseIterationData with malloc_trim (implies --release)")
    p.add_argument("--roi", type=int, default=96, help="sliding-window size (memory does not depend on it)")
    args = p.parse_args(argv)
    entries = sorted(glob.glob(os.path.join(args.cache_dir, "val-*", "*")))
    if not entries:
        raise SystemExit(f"{args.cache_dir}: no val-*/ entry")
    parser = ConfigParser()
    parser.read_config(str(BUNDLE))
    handlers = [ReleaseIterationData(trim=args.trim)] if args.release or args.trim else None
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(
            Dataset([{"entry": entries[0]}] * args.cases, Compose([LoadCacheEntryd(whole=True)])), batch_size=1
        ),
        network=StandInPredictor(),
        inferer=SlidingWindowInferer(roi_size=[args.roi] * 3, sw_batch_size=4, overlap=0.5, mode="gaussian"),
        postprocessing=parser.get_parsed_content("validate#postprocessing"),
        key_val_metric=parser.get_parsed_content("validate#key_metric"),
        additional_metrics=parser.get_parsed_content("validate#additional_metrics"),
        val_handlers=handlers,
    )
    base = _status()["RssAnon"]
    print(f"entry {entries[0]}; anonymous before validation {base:.0f} MB", flush=True)
    _reset_peak()

    def report(engine: SupervisedEvaluator) -> None:
        now = _status()
        print(f"case {engine.state.iteration}: peak {now['VmHWM']:.0f} MB, anonymous after {now['RssAnon']:.0f} MB")
        _reset_peak()

    evaluator.add_event_handler(Events.ITERATION_COMPLETED, report)
    evaluator.run()
    print("metrics", {k: round(float(v), 4) for k, v in evaluator.state.metrics.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
