"""Data pipeline: the training step fed by the bundle's own loader against the same step on a preloaded batch.

The loader is the bundle's ``train#dataloader`` (its default cache, ``DataLoader``),
read from the ``train.yaml`` named by :attr:`~brats_cggm.benchmarking.config.BenchmarkConfig.bundle_config`.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from brats_cggm.benchmarking.config import BenchmarkConfig
from brats_cggm.benchmarking.steps import build_trainer
from brats_cggm.benchmarking.timing import alternate

__all__ = ["bundle_loader", "data_pipeline_benchmark"]


def bundle_loader(config: BenchmarkConfig, dataset_dir: Path, overrides: dict[str, Any] | None = None) -> Any:
    """The bundle's ``train#dataloader`` on ``dataset_dir`` (every case for training), one patch per case.

    Args:
        config: the run's configuration (``bundle_config``, ``base``, ``data_workers``).
        dataset_dir: a BraTS-layout data set.
        overrides: bundle keys set last (default: the disk cache in ``dataset_dir``'s parent folder).

    Returns:
        The ``DataLoader``; ``base.batch`` cases of one patch each make the base step's batch.

    Raises:
        ValueError: ``config.bundle_config`` is not set.
        FileNotFoundError: ``config.bundle_config`` is not a file.
    """
    from monai.bundle import ConfigParser

    from brats_cggm.brats.data.discovery import discover_dataset

    if config.bundle_config is None:
        raise ValueError("BenchmarkConfig.bundle_config: no bundle train.yaml given for the data-pipeline section")
    path = Path(config.bundle_config)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: bundle config not found (pass --bundle-config)")
    parser = ConfigParser()
    parser.read_config(str(path))
    spec = discover_dataset(dataset_dir, list(config.base.modalities))
    base = config.base
    # batch cases x num_samples patches = the base batch, so the step is the same as the preloaded one
    parser["dataset"] = spec
    parser["split"] = [spec.items, []]
    parser["modalities"] = list(base.modalities)
    parser["patch_size"] = list(base.patch)
    parser["num_samples"] = 1
    parser["batch_size"] = base.batch
    parser["num_workers"] = config.data_workers
    for key, value in {"cache_dir": str(Path(dataset_dir).parent / "cache"), **(overrides or {})}.items():
        parser[key] = value
    return parser.get_parsed_content("train#dataloader")


def data_pipeline_benchmark(
    config: BenchmarkConfig, work_dir: Path, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """The training step fed by the bundle's loader against the same step on a preloaded batch.

    Each round runs one epoch of the loader (``rounds`` steps of ``base.batch`` cases, each giving one
    patch) and as many steps on a batch taken from that loader before timing; both trainers start from the
    same weights.

    Args:
        config: the run's configuration (``base``, ``data_shape``, ``data_rounds``, ``data_workers``,
            ``bundle_config``).
        work_dir: scratch folder for the phantom data set.
        log: progress messages.

    Returns:
        ``loader_step_s``, ``preloaded_step_s``, ``load_ratio``, ``cache_build_s`` and the settings.
    """
    from brats_cggm.brats.phantoms.geometric import write_phantom_dataset

    base = dataclasses.replace(config.base, balancer="cggm")
    steps = 2
    n_cases = base.batch * steps
    data_dir = work_dir / "data_pipeline"
    log(f"  writing {n_cases} phantom cases of shape {'x'.join(map(str, config.data_shape))}")
    write_phantom_dataset(data_dir, n=n_cases, shape=config.data_shape, seed=200)
    start = time.perf_counter()
    loader = bundle_loader(config, data_dir)
    cache_build = time.perf_counter() - start
    preloaded = next(iter(loader))
    log(f"  timing loader vs preloaded batch: {config.data_rounds} alternating rounds of {len(loader)} step(s)")
    trainers = {
        "loader": build_trainer(base, loader),
        "preloaded": build_trainer(base, [preloaded] * len(loader)),
    }
    times = alternate(trainers, config.warmup, config.data_rounds)
    loader_s, preloaded_s = statistics.median(times["loader"]), statistics.median(times["preloaded"])
    return {
        "loader_step_s": loader_s,
        "preloaded_step_s": preloaded_s,
        "load_ratio": loader_s / preloaded_s,
        "loader_step_times_s": [round(t, 5) for t in times["loader"]],
        "preloaded_step_times_s": [round(t, 5) for t in times["preloaded"]],
        "cache_build_s": cache_build,
        "cases": n_cases,
        "case_shape": list(config.data_shape),
        "batch_shape": list(preloaded["image"].shape),
        "num_workers": config.data_workers,
        "dataset": type(loader.dataset).__name__,
        "bundle_config": str(config.bundle_config),
    }
