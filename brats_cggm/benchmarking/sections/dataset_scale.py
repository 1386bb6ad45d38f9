"""The ``dataset_scale`` section: memory of a default training run against the number of full-size cases, loader
speed, cache build time.

Three measurements on full-size phantoms (``scale_shape``, BraTS's 240 x 240 x 155 by default):

- ``runs``: the bundle's training as a user runs it (``python -m monai.bundle run --config_file train.yaml``,
  default configuration, ``max_epochs: 1``, CPU) on data sets of ``scale_cases`` cases (copies of one phantom
  case, :func:`replicate_case`, so that every validation case has one extent): the disk cache built in
  the run (a fresh cache folder per run), one epoch, the validation after it. The whole process tree (the run,
  its DataLoader workers, its cache-building processes) is sampled while it runs
  (:class:`~brats_cggm.benchmarking.process_tree.TreePeakSampler`); each run reports its peak anonymous,
  file-backed and total resident memory. A least-squares line through each kind's peaks gives the memory per
  added case and the peak extrapolated to BraTS 2021's 1,251 training cases.
- ``loader``: the training step fed by the bundle's loader (disk cache, ``scale_workers`` DataLoader workers)
  against the same step on a preloaded batch, at each of ``scale_patches``.
- ``build``: seconds per case to build disk cache entries with one process, then with ``scale_workers``.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from brats_cggm.benchmarking.config import BenchmarkConfig

__all__ = [
    "BRATS2021_CASES",
    "bundle_run_memory",
    "dataset_scale_benchmark",
    "linear_fit",
    "replicate_case",
    "scale_epoch_worker",
    "subset_dataset",
]

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
    from brats_cggm.brats.data.discovery import discover_dataset

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


def replicate_case(case_dir: str | os.PathLike, out_dir: str | os.PathLike, n: int) -> Path:
    """A BraTS 2021-layout data set of ``n`` copies of one case folder, each under its own case id.

    Validation holds one whole case at a time, so a run's peak follows its largest validation case: with
    cases of different extents, a line through peaks over data-set sizes measures which case happens to be
    validated. Copies of one case keep that peak fixed, so the line measures the memory each added case costs.

    Args:
        case_dir: a case folder ``<id>/<id>_<modality>.nii.gz``.
        out_dir: the new data set folder (created; it must not exist).
        n: how many copies; case ids ``BraTS2021_00000`` ... in the copies' file names too.

    Returns:
        ``out_dir``.
    """
    case_dir, out = Path(case_dir), Path(out_dir)
    out.mkdir(parents=True)
    for i in range(n):
        case_id = f"BraTS2021_{i:05d}"
        (out / case_id).mkdir()
        for source in sorted(case_dir.iterdir()):
            shutil.copyfile(source, out / case_id / source.name.replace(case_dir.name, case_id, 1))
    return out


def subset_dataset(source_dir: str | os.PathLike, out_dir: str | os.PathLike, n: int) -> Path:
    """A data set folder of the first ``n`` case folders of ``source_dir``, as symbolic links (no copy).

    Args:
        source_dir: a BraTS-layout data set (one folder per case).
        out_dir: the new folder (created; it must not exist).
        n: how many cases, in name order.

    Returns:
        ``out_dir``.

    Raises:
        ValueError: ``source_dir`` has fewer than ``n`` case folders.
    """
    cases = sorted(p for p in Path(source_dir).iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(cases) < n:
        raise ValueError(f"{source_dir}: {len(cases)} case folders, {n} asked for")
    out = Path(out_dir)
    out.mkdir(parents=True)
    for case in cases[:n]:
        (out / case.name).symlink_to(case.resolve(), target_is_directory=True)
    return out


def bundle_run_memory(
    bundle_config: str | os.PathLike,
    dataset_dir: str | os.PathLike,
    cache_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    overrides: dict[str, Any] | None = None,
    interval: float = 0.05,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Run the bundle's training as a user does, in a subprocess, and sample its process tree's memory.

    The command is ``python -m monai.bundle run --config_file BUNDLE --dataset_dir ... --cache_dir ...
    --output_dir ... --max_epochs 1 --device cpu`` plus ``overrides`` (``--key value``), in the caller's
    environment (no allocator settings: the user's).

    Args:
        bundle_config: the bundle's ``train.yaml``.
        dataset_dir: the data set.
        cache_dir: the disk cache's root (a fresh folder makes the run build its entries).
        output_dir: the run's output folder (must not hold a previous run).
        overrides: more bundle keys, as ``--key value`` arguments (values as ``str()`` writes them).
        interval: seconds between memory samples.
        timeout: seconds before the run is killed; None = no limit.

    Returns:
        ``peak_anon_bytes``, ``peak_file_bytes``, ``peak_shmem_bytes``, ``peak_total_bytes`` (peaks of the sums
        over the tree, see :class:`~brats_cggm.benchmarking.process_tree.TreePeakSampler`), ``max_processes``,
        ``samples`` and ``wall_s``.

    Raises:
        RuntimeError: the run failed or timed out (the message ends with its last log lines).
    """
    from brats_cggm.benchmarking.process_tree import TreePeakSampler

    settings = {"max_epochs": 1, "device": "cpu", **(overrides or {})}
    settings.update(dataset_dir=str(dataset_dir), cache_dir=str(cache_dir), output_dir=str(output_dir))
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(bundle_config)]
    for key, value in settings.items():
        cmd += [f"--{key}", str(value)]
    Path(output_dir).parent.mkdir(parents=True, exist_ok=True)
    log_path = Path(output_dir).with_name(Path(output_dir).name + ".log")
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        with TreePeakSampler(proc.pid, interval) as sampler:
            try:
                code = proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                code = None
    wall = time.perf_counter() - start
    if code != 0:
        tail = " ".join(log_path.read_text(errors="replace").strip().splitlines()[-3:])
        reason = f"timed out after {timeout} s" if code is None else f"exit {code}"
        raise RuntimeError(f"bundle run on {dataset_dir} failed ({reason}): {tail}")
    peaks = sampler.peaks
    return {
        "peak_anon_bytes": peaks["anon"],
        "peak_file_bytes": peaks["file"],
        "peak_shmem_bytes": peaks["shmem"],
        "peak_total_bytes": peaks["total"],
        "max_processes": peaks["processes"],
        "samples": sampler.samples,
        "wall_s": wall,
    }


#: The page kinds whose peaks get a line (``peak_<kind>_bytes`` of :func:`bundle_run_memory`).
_LINE_KINDS = ("anon", "file", "total")


def memory_lines(points: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """A least-squares line of each kind's peak against the number of cases.

    Args:
        points: runs with ``cases`` and ``peak_<kind>_bytes`` for each kind of ``anon``, ``file``, ``total``.

    Returns:
        Per kind: ``mb_per_case`` (slope), ``intercept_mb`` and ``extrapolated_peak_gb`` at
        :data:`BRATS2021_CASES`.
    """
    out = {}
    for kind in _LINE_KINDS:
        slope, intercept = linear_fit([p["cases"] for p in points], [p[f"peak_{kind}_bytes"] for p in points])
        out[kind] = {
            "mb_per_case": slope / 1e6,
            "intercept_mb": intercept / 1e6,
            "extrapolated_peak_gb": (intercept + slope * BRATS2021_CASES) / 1e9,
        }
    return out


def _largest_val_voxels(cache_dir: Path) -> int:
    import json
    import math

    sizes = [0]
    for meta in cache_dir.glob("val-*/*/meta.json"):
        sizes.append(math.prod(json.loads(meta.read_text())["image_shape"][1:]))
    return max(sizes)


def _run_memory(config: BenchmarkConfig, data_dir: Path, work_dir: Path, log: Callable[[str], None]) -> dict:
    from monai.bundle import ConfigParser

    from brats_cggm.brats.data.discovery import discover_dataset
    from brats_cggm.brats.data.splits import split_datalist

    if config.bundle_config is None:
        raise ValueError("the scale section's bundle run needs the bundle's train.yaml (bundle_config)")
    bundle_config = config.bundle_config
    bundle = ConfigParser.load_config_file(str(bundle_config))
    points = []
    for n in config.scale_cases:
        subset = subset_dataset(data_dir, work_dir / f"runs/data_{n}", n)
        # the bundle's own split, only to report it: the run splits again
        split = split_datalist(discover_dataset(subset).items, val_fraction=bundle["val_fraction"], seed=bundle["seed"])
        train, val = split
        log(f"  bundle run on {n} cases ({len(train)} training, {len(val)} validation): cache build, 1 epoch")
        result = bundle_run_memory(
            bundle_config,
            subset,
            work_dir / f"runs/cache_{n}",
            work_dir / f"runs/out_{n}",
            overrides=config.scale_overrides,
        )
        # validation holds one whole case at a time: its peak follows the largest validation volume, which
        # grows with the data set as a maximum does (docs/performance.md, dataset_scale section)
        largest = _largest_val_voxels(work_dir / f"runs/cache_{n}")
        points.append(
            {"cases": n, "train_cases": len(train), "val_cases": len(val), "largest_val_voxels": largest, **result}
        )
    return {"points": points, "overrides": dict(config.scale_overrides), **memory_lines(points)}


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
    from brats_cggm.brats.data.cache.disk import fill_cache
    from brats_cggm.brats.data.discovery import discover_dataset

    spec = discover_dataset(data_dir)
    items = spec.items[: config.scale_build_cases]
    options = {"label_convention": spec.label_convention, "channel_order": spec.channel_order, "pixdim": [1.0] * 3}
    out: dict[str, float] = {"cases": len(items)}
    for label, workers in (("one_worker", 1), ("all_workers", config.scale_workers or os.cpu_count() or 1)):
        log(f"  building {len(items)} cache entries with {workers} process(es)")
        start = time.perf_counter()
        fill_cache(items, "train", work_dir / f"build_{label}", _bundle_patch(config), options, workers, progress=False)
        out[f"{label}_s_per_case"] = (time.perf_counter() - start) / len(items)
        out[f"{label}_processes"] = workers
    return out


def dataset_scale_benchmark(
    config: BenchmarkConfig, work_dir: Path, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Memory of default bundle runs against the number of cases, loader speed, cache build time.

    Args:
        config: the run's configuration (``bundle_config``, ``base``, ``scale_*``, ``warmup``, ``data_rounds``).
        work_dir: scratch folder for the phantoms, the caches and the runs' outputs.
        log: progress messages.

    Returns:
        ``runs`` (``points``: one per data-set size; and per page kind ``anon``, ``file``, ``total``:
        ``mb_per_case``, ``extrapolated_peak_gb``), ``loader`` (per patch: ``load_ratio``...), ``build``
        (seconds per case), ``disk_entry_mb`` (mean training entry of the largest run) and the settings.

    Raises:
        ValueError: ``config.bundle_config`` is not set.
    """
    from brats_cggm.brats.phantoms.geometric import write_phantom_dataset

    if config.bundle_config is None:
        raise ValueError("BenchmarkConfig.bundle_config: no bundle train.yaml given for the dataset_scale section")
    n_max = max(config.scale_cases)
    data_dir = work_dir / "scale_data"
    log(f"  writing {n_max} copies of one phantom case of shape {'x'.join(map(str, config.scale_shape))}")
    start = time.perf_counter()
    write_phantom_dataset(work_dir / "scale_source", n=1, shape=tuple(config.scale_shape), seed=300)
    replicate_case(next((work_dir / "scale_source").iterdir()), data_dir, n_max)
    phantoms_s = time.perf_counter() - start
    # subprocesses, like every memory measurement: off with --no-memory
    runs = _run_memory(config, data_dir, work_dir, log) if config.memory else None
    entries = sorted((work_dir / f"runs/cache_{n_max}").glob("train-*/*/image.npy")) if runs else []
    entry_mb = (
        statistics.fmean(sum(f.stat().st_size for f in e.parent.iterdir()) / 1e6 for e in entries) if entries else None
    )
    out = {
        "cases": list(config.scale_cases),
        "case_shape": list(config.scale_shape),
        "phantoms_s": phantoms_s,
        "disk_entry_mb": entry_mb,
        "runs": runs,
        "loader": _loader_speed(config, data_dir, work_dir / "scale_cache", log),
        "build": _build_time(config, data_dir, work_dir, log),
        "load_average": os.getloadavg(),
        "cpu_count": os.cpu_count(),
    }
    # the runs' caches and outputs: gigabytes at full size, no longer needed
    shutil.rmtree(work_dir / "runs", ignore_errors=True)
    return out


def _bundle_patch(config: BenchmarkConfig) -> tuple[int, ...]:
    from monai.bundle import ConfigParser

    return tuple(ConfigParser.load_config_file(str(config.bundle_config))["patch_size"])
