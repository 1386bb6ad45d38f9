"""Scale: memory of one training epoch against the number of full-size cases, loader speed, cache build time.

Three measurements on full-size phantoms (``scale_shape``, BraTS's 240 x 240 x 155 by default):

- ``epochs``: the peak resident memory of one epoch of the bundle's own trainer (default configuration, no
  validation) on 6, 12, 24 cases (``scale_cases``), each in a fresh subprocess, for ``cache: disk`` (entries
  built beforehand, as ``brats-cggm-prepare`` does) and ``cache: memory`` (``CacheDataset``, filled in the
  subprocess). A least-squares line through the peaks gives the memory per added case and the peak
  extrapolated to BraTS 2021's 1,251 training cases.
- ``loader``: the training step fed by the bundle's loader (disk cache, ``scale_workers`` DataLoader workers)
  against the same step on a preloaded batch, at each of ``scale_patches``.
- ``build``: seconds per case to build disk cache entries with one process, then with ``scale_workers``.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from brats_cggm.benchmarking.config import BenchmarkConfig

__all__ = ["BRATS2021_CASES", "linear_fit", "scale_benchmark", "scale_epoch_worker"]

#: Training cases of BraTS 2021, the point the memory lines are extrapolated to.
BRATS2021_CASES = 1251


def linear_fit(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Least-squares line ``y = intercept + slope * x``.

    Args:
        xs: at least two distinct abscissae.
        ys: the values.

    Returns:
        ``(slope, intercept)``.

    Raises:
        ValueError: fewer than two distinct ``xs``.
    """
    if len(set(xs)) < 2:
        raise ValueError(f"a line needs two distinct abscissae, got {list(xs)}")
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return slope, my - slope * mx


def _bundle_parser(bundle_config: str, dataset_dir: str, overrides: dict[str, Any]) -> Any:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(bundle_config)
    parser["dataset_dir"] = dataset_dir
    for key, value in overrides.items():
        parser[key] = value
    return parser


def scale_epoch_worker(payload: dict[str, Any]) -> dict[str, Any]:
    """One epoch of the bundle's trainer on the first ``n_cases`` cases, in this (fresh) process.

    Args:
        payload: ``bundle_config``, ``dataset_dir``, ``n_cases``, ``cache``, ``cache_dir``, ``output_dir``, and
            optionally ``overrides`` (more bundle keys).

    Returns:
        ``peak_rss_bytes`` (whole process, ``VmHWM``), ``setup_s`` (dataset and trainer built: the memory
        cache fills here), ``epoch_s``, ``iterations``.
    """
    from brats_cggm.benchmarking.memory import peak_rss
    from brats_cggm.brats.data import discover_dataset

    spec = discover_dataset(payload["dataset_dir"])
    items = spec.items[: int(payload["n_cases"])]
    overrides = {
        "dataset": spec,
        "split": [items, []],
        "cache": payload["cache"],
        "cache_dir": payload["cache_dir"],
        "output_dir": payload["output_dir"],
        "device": "cpu",
        "max_epochs": 1,
        # the data pipeline and the training steps only: no validation, checkpoints or logs
        "train#trainer#train_handlers": [],
        **payload.get("overrides", {}),
    }
    parser = _bundle_parser(payload["bundle_config"], payload["dataset_dir"], overrides)
    start = time.perf_counter()
    trainer = parser.get_parsed_content("train#trainer")
    setup = time.perf_counter() - start
    start = time.perf_counter()
    trainer.run()
    return {
        "peak_rss_bytes": peak_rss(),
        "setup_s": setup,
        "epoch_s": time.perf_counter() - start,
        "iterations": trainer.state.iteration,
        "cases": len(items),
    }


def _epoch_memory(config: BenchmarkConfig, data_dir: Path, cache_dir: Path, log: Callable[[str], None]) -> dict:
    from brats_cggm.benchmarking.memory import run_worker

    out: dict[str, Any] = {}
    for cache in ("disk", "memory"):
        points = []
        for n in config.scale_cases:
            log(f"  one epoch, cache: {cache}, {n} cases")
            with tempfile.TemporaryDirectory(prefix="scale_out_") as output_dir:
                payload = {
                    "bundle_config": str(config.bundle_config),
                    "dataset_dir": str(data_dir),
                    "n_cases": n,
                    "cache": cache,
                    "cache_dir": str(cache_dir),
                    "output_dir": output_dir,
                }
                points.append(run_worker("scale_epoch", payload))
        slope, intercept = linear_fit([p["cases"] for p in points], [p["peak_rss_bytes"] for p in points])
        out[cache] = {
            "points": points,
            "mb_per_case": slope / 1e6,
            "intercept_mb": intercept / 1e6,
            "extrapolated_peak_gb": (intercept + slope * BRATS2021_CASES) / 1e9,
        }
    return out


def _loader_speed(config: BenchmarkConfig, data_dir: Path, cache_dir: Path, log: Callable[[str], None]) -> list:
    from brats_cggm.benchmarking.sections.data import bundle_loader
    from brats_cggm.benchmarking.steps import build_trainer
    from brats_cggm.benchmarking.timing import alternate

    workers = config.scale_workers or os.cpu_count() or 1
    points = []
    for patch in config.scale_patches:
        base = dataclasses.replace(config.base, balancer="cggm", patch=tuple(patch))
        run_config = dataclasses.replace(config, base=base, data_workers=workers)
        loader = bundle_loader(run_config, data_dir, {"cache": "disk", "cache_dir": str(cache_dir)})
        log(f"  loader vs preloaded batch at {'x'.join(map(str, patch))}, {workers} workers, {len(loader)} steps")
        preloaded = next(iter(loader))
        trainers = {"loader": build_trainer(base, loader), "preloaded": build_trainer(base, [preloaded] * len(loader))}
        times = alternate(trainers, config.warmup, config.data_rounds)
        loader_s, preloaded_s = statistics.median(times["loader"]), statistics.median(times["preloaded"])
        points.append(
            {
                "patch": list(patch),
                "loader_step_s": loader_s,
                "preloaded_step_s": preloaded_s,
                "load_ratio": loader_s / preloaded_s,
                "steps_per_round": len(loader),
                "num_workers": workers,
            }
        )
    return points


def _build_time(config: BenchmarkConfig, data_dir: Path, work_dir: Path, log: Callable[[str], None]) -> dict:
    from brats_cggm.brats.cache.disk import fill_cache
    from brats_cggm.brats.data import discover_dataset

    spec = discover_dataset(data_dir)
    items = spec.items[: config.scale_build_cases]
    options = {"label_convention": spec.label_convention, "channel_order": spec.channel_order, "pixdim": [1.0] * 3}
    out = {"cases": len(items)}
    for label, workers in (("one_worker", 1), ("all_workers", config.scale_workers or os.cpu_count() or 1)):
        log(f"  building {len(items)} cache entries with {workers} process(es)")
        start = time.perf_counter()
        fill_cache(items, "train", work_dir / f"build_{label}", _bundle_patch(config), options, workers, progress=False)
        out[f"{label}_s_per_case"] = (time.perf_counter() - start) / len(items)
        out[f"{label}_processes"] = workers
    return out


def scale_benchmark(config: BenchmarkConfig, work_dir: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Epoch memory against the number of cases (disk and memory caches), loader speed, cache build time.

    Args:
        config: the run's configuration (``bundle_config``, ``base``, ``scale_*``, ``warmup``, ``data_rounds``).
        work_dir: scratch folder for the phantoms and the caches.
        log: progress messages.

    Returns:
        ``epochs`` (per cache mode: points, ``mb_per_case``, ``extrapolated_peak_gb``), ``loader`` (per patch:
        ``load_ratio``...), ``build`` (seconds per case), ``disk_entry_mb`` and the settings.

    Raises:
        ValueError: ``config.bundle_config`` is not set.
    """
    from brats_cggm.brats.cache.disk import fill_cache
    from brats_cggm.brats.phantoms import write_phantom_dataset

    if config.bundle_config is None:
        raise ValueError("BenchmarkConfig.bundle_config: no bundle train.yaml given for the scale section")
    n_max = max(config.scale_cases)
    data_dir, cache_dir = work_dir / "scale_data", work_dir / "scale_cache"
    log(f"  writing {n_max} phantom cases of shape {'x'.join(map(str, config.scale_shape))}")
    write_phantom_dataset(data_dir, n=n_max, shape=tuple(config.scale_shape), seed=300)
    log(f"  building the disk cache of {n_max} cases (one process), as brats-cggm-prepare does")
    start = time.perf_counter()
    # every case as a training entry at the bundle's patch size: what the epoch workers read
    filled = fill_cache(
        _all_items(data_dir), "train", cache_dir, _bundle_patch(config), _options(data_dir), progress=False
    )
    prepare_s = time.perf_counter() - start
    entries = [Path(e["entry"]) for e in filled]
    entry_mb = statistics.fmean(sum(f.stat().st_size for f in e.iterdir()) for e in entries) / 1e6
    return {
        "cases": list(config.scale_cases),
        "case_shape": list(config.scale_shape),
        "prepare_s": prepare_s,
        "disk_entry_mb": entry_mb,
        # subprocesses, like every memory measurement: off with --no-memory
        "epochs": _epoch_memory(config, data_dir, cache_dir, log) if config.memory else None,
        "loader": _loader_speed(config, data_dir, cache_dir, log),
        "build": _build_time(config, data_dir, work_dir, log),
        "load_average": os.getloadavg(),
        "cpu_count": os.cpu_count(),
    }


def _bundle_patch(config: BenchmarkConfig) -> tuple[int, ...]:
    from monai.bundle import ConfigParser

    return tuple(ConfigParser.load_config_file(str(config.bundle_config))["patch_size"])


def _all_items(data_dir: Path) -> list[dict]:
    from brats_cggm.brats.data import discover_dataset

    return discover_dataset(data_dir).items


def _options(data_dir: Path) -> dict[str, Any]:
    from brats_cggm.brats.data import discover_dataset

    spec = discover_dataset(data_dir)
    return {"label_convention": spec.label_convention, "channel_order": spec.channel_order, "pixdim": [1.0] * 3}
