"""Benchmarks of the BraTS pipeline: balancer overhead, whole-volume inference, data loading, scaling.

Every figure is measured in one run and reported as a ratio against a reference measured in the same run,
because the machines this runs on are shared and their absolute speed drifts.

What is timed:

* **Training step** — :class:`~brats_cggm.engine.trainer.BalancedTrainer`'s own iteration (forward, task loss,
  auxiliary heads, balancer hooks, backward, gradient edits, clipping, both optimizer steps), run through
  ``trainer.run()``; a step's time is the interval between consecutive ``ITERATION_COMPLETED`` events (the
  first one from ``EPOCH_STARTED``), so fetching the batch is inside it. Balancers are run in alternating
  blocks (joint, cggm, ..., joint, cggm, ...) and the median step is kept, so that load from other processes
  hits every balancer alike.
* **Peak memory** — each configuration runs in a fresh subprocess (``python -m brats_cggm.benchmarking``). On
  CPU the kernel's peak resident set size ``VmHWM`` of ``/proc/self/status`` is read: after setup the peak is
  reset (``/proc/self/clear_refs``) and the current ``VmRSS`` kept as the baseline, so ``step_peak_bytes`` is
  what the training steps add on top of the process with its model, optimizers and batch, and
  ``peak_rss_bytes`` the whole process. (``tracemalloc`` does not see torch's allocations.) On CUDA it is
  ``torch.cuda.max_memory_allocated``. The memory ratio compares ``step_peak_bytes`` on CPU (stricter than
  the whole-process ratio, which is reported too) and the CUDA peak on GPU.
* **Inference** — one 240×240×155 four-modality phantom case written as NIfTI, segmented end to end with
  :class:`~brats_cggm.brats.inference.BratsSegmenter` as ``brats-cggm-infer`` does (check and read the files,
  preprocess, sliding window, invert, write the labels), against the sliding window alone on the same
  preprocessed tensor.
* **Data pipeline** — the step with the bundle's own loader (``train#dataloader`` of
  ``bundles/brats_cggm/configs/train.yaml``: ``CacheDataset`` of the training transforms, ``DataLoader``)
  against the same step on one preloaded batch from that loader.
* **Scaling** — step time against the patch size and the number of modalities; on CUDA also AMP (bf16),
  ``channels_last_3d`` and ``torch.compile`` variants (channels_last on CPU too).

Run ``python scripts/benchmark.py --help``; results and their commands are in ``docs/performance.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import inspect
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "BALANCER_ACTIVE_KWARGS",
    "TARGETS",
    "BenchmarkConfig",
    "StepSpec",
    "balancer_benchmark",
    "benchmark_config",
    "build_trainer",
    "data_pipeline_benchmark",
    "format_report",
    "inference_benchmark",
    "main",
    "measure_step_memory",
    "run_benchmarks",
    "scaling_benchmark",
    "synthetic_batch",
    "variants_benchmark",
]

#: The targets of issue 8 (CPU, default preset): upper bounds of the ratios.
TARGETS: dict[str, float] = {"cggm_time_ratio": 1.10, "cggm_mem_ratio": 1.05, "infer_ratio": 1.25, "load_ratio": 1.10}

#: Arguments that make a balancer act from the first epoch (the benchmark runs epoch 1 only).
BALANCER_ACTIVE_KWARGS: dict[str, dict[str, Any]] = {
    "cggm": {"start_epoch": 0},
    "dropout": {"start_epoch": 0},
    "inforeg": {"start_epoch": 0},
    "ogm_ge": {"start_epoch": 1},
    "opm": {"warmup_epochs": 0},
}

_DEFAULT_BUNDLE_CONFIG = Path(__file__).resolve().parents[1] / "bundles" / "brats_cggm" / "configs" / "train.yaml"
_MODALITIES = ("flair", "t1ce", "t1", "t2")


# ------------------------------------------------------------------------------------------ configuration


@dataclasses.dataclass
class StepSpec:
    """One training-step configuration.

    Attributes:
        preset: ``build_network`` preset (``"cpu"`` or ``"full"``).
        patch: training patch size.
        batch: patches per step.
        modalities: input modalities.
        balancer: registry name of the balancer.
        device: ``"cpu"`` or ``"cuda"``.
        amp: None (fp32), ``"bf16"`` or ``"fp16"`` (CUDA only).
        channels_last: convert the network and heads to ``torch.channels_last_3d``.
        compile: ``torch.compile`` the network's blocks and the heads.
        features: network widths replacing the preset's (tests use tiny ones).
        seed: seed of the weights and of the synthetic batch.
    """

    preset: str = "cpu"
    patch: tuple[int, ...] = (32, 32, 32)
    batch: int = 2
    modalities: tuple[str, ...] = _MODALITIES
    balancer: str = "cggm"
    device: str = "cpu"
    amp: str | None = None
    channels_last: bool = False
    compile: bool = False
    features: tuple[int, ...] | None = None
    seed: int = 0

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict (also the subprocess protocol)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StepSpec:
        """Inverse of :meth:`to_json`."""
        data = dict(data)
        for key in ("patch", "modalities", "features"):
            if data.get(key) is not None:
                data[key] = tuple(data[key])
        return cls(**data)


@dataclasses.dataclass
class BenchmarkConfig:
    """Sizes and repetitions of a benchmark run.

    Attributes:
        base: the step compared across balancers and data pipelines.
        balancers: balancer names; None = every registered one.
        warmup: untimed steps before the timed ones.
        rounds: alternation rounds (each runs ``block`` steps of every configuration).
        block: steps per configuration and round.
        memory: measure peak memory in subprocesses (off = no subprocess at all).
        memory_steps: training steps run by each memory subprocess.
        infer_shape: shape of the inference case.
        infer_roi: sliding-window size.
        infer_overlap: sliding-window overlap.
        infer_sw_batch: windows per forward pass.
        infer_reps: end-to-end and network-only repetitions (alternated).
        data_shape: shape of the data-pipeline phantom cases.
        data_rounds: alternation rounds of loader epochs and preloaded blocks.
        data_workers: ``DataLoader`` workers (the bundle's ``num_workers``).
        scaling_patches: patch sizes of the patch-size curve.
        scaling_modalities: modality counts of the modality curve (at the base patch).
        scaling_reps: timed steps per scaling point.
        scaling_warmup: untimed steps before each scaling point.
        variants: speed-option variants at the base step (see :func:`variants_benchmark`).
        skipped: what this configuration leaves out, and why (reported in the JSON).
        bundle_config: the bundle's ``train.yaml`` whose loader is benchmarked.
    """

    base: StepSpec = dataclasses.field(default_factory=StepSpec)
    balancers: list[str] | None = None
    warmup: int = 1
    rounds: int = 3
    block: int = 1
    memory: bool = True
    memory_steps: int = 2
    infer_shape: tuple[int, int, int] = (240, 240, 155)
    infer_roi: tuple[int, int, int] = (64, 64, 64)
    infer_overlap: float = 0.5
    infer_sw_batch: int = 2
    infer_reps: int = 1
    data_shape: tuple[int, int, int] = (240, 240, 155)
    data_rounds: int = 3
    data_workers: int = 0
    scaling_patches: list[tuple[int, int, int]] = dataclasses.field(default_factory=list)
    scaling_modalities: list[int] = dataclasses.field(default_factory=lambda: [2, 3, 4])
    scaling_reps: int = 2
    scaling_warmup: int = 1
    variants: list[str] = dataclasses.field(default_factory=lambda: ["default", "channels_last"])
    skipped: list[str] = dataclasses.field(default_factory=list)
    bundle_config: str = str(_DEFAULT_BUNDLE_CONFIG)


def benchmark_config(
    device: str = "cpu", preset: str = "cpu", quick: bool = False, tiny: bool = False
) -> BenchmarkConfig:
    """The configuration ``scripts/benchmark.py`` runs.

    Args:
        device: ``"cpu"`` or ``"cuda"``.
        preset: network preset, ``"cpu"`` or ``"full"``.
        quick: fewer repetitions and sizes (CPU: under 10 minutes on 2 cores).
        tiny: toy sizes for smoke tests (seconds; the numbers mean nothing).

    Returns:
        The configuration.
    """
    cuda = device == "cuda"
    if tiny:
        base = StepSpec(preset=preset, patch=(16, 16, 16), batch=1, device=device, features=(4, 8))
        return BenchmarkConfig(
            base=base,
            balancers=["joint", "cggm"],
            warmup=1,
            rounds=1,
            memory=False,
            infer_shape=(40, 40, 32),
            infer_roi=(16, 16, 16),
            infer_overlap=0.25,
            data_shape=(40, 40, 32),
            data_rounds=1,
            scaling_patches=[(16, 16, 16)],
            scaling_modalities=[2],
            scaling_reps=1,
            variants=["default"],
            skipped=["tiny: toy sizes and a toy network; timings are meaningless"],
        )
    # The bundle trains the cpu preset on 32³ patches; the full preset is meant for 128³ on a GPU.
    patch = (128, 128, 128) if preset == "full" else (32, 32, 32)
    base = StepSpec(preset=preset, patch=patch, batch=2, device=device)
    config = BenchmarkConfig(base=base)
    config.infer_roi = (128, 128, 128) if preset == "full" else (64, 64, 64)
    config.infer_sw_batch = 4 if cuda else 2
    if cuda:
        config.variants = ["default", "bf16", "channels_last", "bf16+channels_last", "bf16+channels_last+compile"]
    config.scaling_patches = [(64, 64, 64), (96, 96, 96), (128, 128, 128)]
    if quick:
        config.rounds, config.warmup, config.memory_steps, config.scaling_reps = 3, 1, 1, 1
        config.data_rounds = 3
        if not cuda:
            config.scaling_patches = [(64, 64, 64), (96, 96, 96)]
            config.scaling_warmup = 0
            config.skipped.append("quick on CPU: the 128³ point of the patch-size curve is skipped")
            config.skipped.append("quick on CPU: each scaling point is one step without warm-up")
            config.infer_overlap = 0.25
            config.skipped.append("quick on CPU: inference uses sliding-window overlap 0.25 instead of 0.5")
    else:
        config.rounds, config.block, config.warmup, config.scaling_reps = 5, 2, 2, 3
        config.infer_reps = 2
        config.data_rounds = 5
    return config


# ------------------------------------------------------------------------------------------- the steps


def synthetic_batch(spec: StepSpec) -> dict[str, torch.Tensor]:
    """A BraTS-shaped batch (regions visible mostly in the first modalities), on the CPU.

    Args:
        spec: the configuration.

    Returns:
        ``{"image": (B, M, *patch), "label": (B, 3, *patch)}``.
    """
    g = torch.Generator().manual_seed(spec.seed)
    shape = (spec.batch, 3, *spec.patch)
    label = (torch.rand(shape, generator=g) > 0.8).float()
    label[:, 1] = torch.maximum(label[:, 1], label[:, 0])  # WT contains TC
    image = torch.randn((spec.batch, len(spec.modalities), *spec.patch), generator=g)
    image[:, 0] += 2.0 * label[:, 1]
    if len(spec.modalities) > 1:
        image[:, 1] += 1.0 * label[:, 2]
    return {"image": image, "label": label}


def _balancer_kwargs(name: str, modalities: Sequence[str]) -> dict[str, Any]:
    from brats_cggm.balancing.registry import _REGISTRY

    kwargs: dict[str, Any] = {"modalities": tuple(modalities)}
    extra = BALANCER_ACTIVE_KWARGS.get(name, {})
    cls = _REGISTRY.get(name)
    if cls is not None:
        accepted = inspect.signature(cls.__init__).parameters
        kwargs.update({k: v for k, v in extra.items() if k in accepted})
    return kwargs


def build_trainer(spec: StepSpec, data: Sequence[Any] | Iterable) -> Any:
    """A :class:`BalancedTrainer` as the bundle builds it (AdamW, gradient clipping 12) for ``spec``.

    Args:
        spec: the configuration.
        data: the trainer's data loader (a list of batches or a ``DataLoader``).

    Returns:
        The trainer, one epoch per ``run()``.

    Raises:
        Exception: whatever the balancer's constructor raises.
    """
    from brats_cggm.balancing import create_balancer
    from brats_cggm.brats.network import AuxiliaryHeads, apply_speed_options, build_network
    from brats_cggm.brats.task import BratsSegmentationTask
    from brats_cggm.engine.trainer import BalancedTrainer

    device = torch.device(spec.device)
    torch.manual_seed(spec.seed)
    overrides = {"features": spec.features} if spec.features is not None else {}
    network = build_network(spec.preset, modalities=spec.modalities, **overrides).to(device)
    heads = AuxiliaryHeads.for_network(network).to(device)
    balancer = create_balancer(spec.balancer, **_balancer_kwargs(spec.balancer, spec.modalities))
    apply_speed_options([network, heads], channels_last=spec.channels_last, compile=spec.compile)
    amp_kwargs = {"dtype": torch.bfloat16 if spec.amp == "bf16" else torch.float16} if spec.amp else None
    return BalancedTrainer(
        device=device,
        max_epochs=1,
        train_data_loader=data,
        network=network,
        optimizer=torch.optim.AdamW(network.parameters(), lr=3e-3, weight_decay=1e-5),
        task=BratsSegmentationTask(),
        balancer=balancer,
        aux_heads=heads,
        aux_optimizer=torch.optim.AdamW(heads.parameters(), lr=3e-3),
        grad_clip=12.0,
        amp=bool(spec.amp) and device.type == "cuda",
        amp_kwargs=amp_kwargs,
        non_blocking=device.type == "cuda",
    )


def _sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _run_block(trainer: Any) -> list[float]:
    """Run one epoch of ``trainer``; the seconds of each step (batch fetching included)."""
    from ignite.engine import Events

    marks: list[float] = []

    def mark(engine: Any) -> None:
        _sync(engine.state.device)
        marks.append(time.perf_counter())

    handles = [trainer.add_event_handler(Events.EPOCH_STARTED, mark)]
    handles.append(trainer.add_event_handler(Events.ITERATION_COMPLETED, mark))
    try:
        trainer.run()
    finally:
        for handle in handles:
            handle.remove()
    return [b - a for a, b in itertools.pairwise(marks)]


def _alternate(
    trainers: dict[str, Any], warmup: int, rounds: int, errors: dict[str, str] | None = None
) -> dict[str, list[float]]:
    """Warm every trainer up, then run one epoch of each in turn, ``rounds`` times; step times per name.

    With ``errors`` given, a trainer whose step raises is dropped and its error kept there; otherwise the
    exception propagates.
    """
    times: dict[str, list[float]] = {name: [] for name in trainers}
    active = dict(trainers)

    def run(name: str) -> list[float]:
        try:
            return _run_block(active[name])
        except Exception as exc:
            if errors is None:
                raise
            errors[name] = f"{type(exc).__name__}: {exc}"
            del active[name], times[name]
            return []

    for name in list(active):
        for _ in range(warmup):
            if name in active:
                run(name)
    for _ in range(rounds):
        for name in list(active):
            steps = run(name)
            if name in active:
                times[name] += steps
    return times


def _summary(times: list[float]) -> dict[str, Any]:
    return {"step_time_s": statistics.median(times), "step_times_s": [round(t, 5) for t in times]}


# -------------------------------------------------------------------------------------------- memory


def _proc_status(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss() -> int | None:
    peak = _proc_status("VmHWM")
    if peak is None:  # no /proc: ru_maxrss (kB on Linux, bytes on macOS)
        import resource

        scale = 1 if sys.platform == "darwin" else 1024
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    return peak


def _memory_worker(spec: StepSpec, steps: int) -> dict[str, Any]:
    """Run ``steps`` training steps of ``spec`` in this (fresh) process and report its peak memory."""
    batch = synthetic_batch(spec)
    trainer = build_trainer(spec, [batch] * steps)
    device = torch.device(spec.device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    reset = _reset_peak_rss()
    # read after the reset: RSS may shrink in between, and the peak restarts from the RSS at reset time
    baseline = _proc_status("VmRSS")
    _run_block(trainer)
    out: dict[str, Any] = {"peak_rss_bytes": _peak_rss(), "baseline_rss_bytes": baseline, "steps": steps}
    if reset and baseline is not None and out["peak_rss_bytes"] is not None:
        out["step_peak_bytes"] = max(0, out["peak_rss_bytes"] - baseline)
    if device.type == "cuda":
        out["cuda_peak_bytes"] = torch.cuda.max_memory_allocated()
    return out


def _run_worker(kind: str, payload: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
    """Run ``python -m brats_cggm.benchmarking --worker KIND PAYLOAD`` and parse its JSON answer."""
    cmd = [sys.executable, "-m", "brats_cggm.benchmarking", "--worker", kind, json.dumps(payload)]
    # the worker must import this very package, installed or not
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    if kind == "memory":
        # A fixed mmap threshold returns every freed tensor to the kernel, so the peak RSS follows the
        # peak of live allocations; glibc's default sliding threshold keeps freed blocks in the heap and
        # made the same step's peak vary by about ±8 MiB (5 %) between runs.
        env.setdefault("MALLOC_MMAP_THRESHOLD_", str(64 * 1024))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = " ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise RuntimeError(f"benchmark worker {kind} failed (exit {proc.returncode}): {tail}")
    return json.loads(lines[-1])


def measure_step_memory(spec: StepSpec, steps: int = 2) -> dict[str, Any]:
    """Peak memory of ``steps`` training steps of ``spec``, in a fresh subprocess.

    Args:
        spec: the configuration.
        steps: steps to run (the first one allocates the optimizer state).

    Returns:
        ``peak_rss_bytes`` (whole process), ``baseline_rss_bytes`` (after setup), ``step_peak_bytes``
        (peak above the baseline, where the kernel lets the peak be reset) and, on CUDA,
        ``cuda_peak_bytes``.
    """
    return _run_worker("memory", {"spec": spec.to_json(), "steps": steps})


# ------------------------------------------------------------------------------------------ balancers


def balancer_benchmark(config: BenchmarkConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Step time and peak memory of every balancer on the same network, patch and batch.

    Balancers whose constructor fails are reported with their ``error`` instead of numbers.

    Args:
        config: the run's configuration (``base``, ``balancers``, ``warmup``, ``rounds``, ``block``,
            ``memory``, ``memory_steps``).
        log: progress messages.

    Returns:
        ``{"per_balancer": {name: {...}}, "cggm_time_ratio", "cggm_mem_ratio", "cggm_rss_ratio"}`` (ratios
        CGGM/joint; None where a side is missing) and each balancer's ``time_ratio``/``mem_ratio`` to joint.
    """
    from brats_cggm.balancing.registry import available_balancers

    names = list(config.balancers) if config.balancers is not None else available_balancers()
    # joint first: the reference of every ratio
    names = sorted(dict.fromkeys(names), key=lambda n: (n != "joint", n != "cggm", n))
    batch = synthetic_batch(config.base)
    results: dict[str, dict[str, Any]] = {}
    trainers: dict[str, Any] = {}
    for name in names:
        spec = dataclasses.replace(config.base, balancer=name)
        try:
            trainers[name] = build_trainer(spec, [batch] * config.block)
        except Exception as exc:  # a balancer that cannot be built here is reported, not fatal
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
            log(f"  {name}: cannot be constructed: {type(exc).__name__}: {exc}")
    log(f"  timing {', '.join(trainers)}: {config.rounds} alternating rounds of {config.block} step(s)")
    errors: dict[str, str] = {}
    try:
        times = _alternate(trainers, config.warmup, config.rounds, errors)
    finally:
        trainers.clear()
    for name, message in errors.items():
        results[name] = {"error": f"training step failed: {message}"}
        log(f"  {name}: training step failed: {message}")
    for name, steps in times.items():
        results[name] = _summary(steps)
    results = {name: results[name] for name in names}
    if config.memory:
        for name in names:
            if "error" in results[name]:
                continue
            log(f"  memory of {name} (subprocess, {config.memory_steps} steps)")
            try:
                results[name].update(
                    measure_step_memory(dataclasses.replace(config.base, balancer=name), config.memory_steps)
                )
            except Exception as exc:
                results[name]["memory_error"] = str(exc)
                log(f"  {name}: memory measurement failed: {exc}")

    def ratio(name: str, key: str) -> float | None:
        a, b = results.get(name, {}).get(key), results.get("joint", {}).get(key)
        return a / b if a is not None and b else None

    mem_key = "cuda_peak_bytes" if torch.device(config.base.device).type == "cuda" else "step_peak_bytes"

    def paired_time_ratio(name: str) -> float | None:
        # median over rounds of (this round's steps / joint's steps in the same round): robust to load drift
        if name not in times or "joint" not in times:
            return None
        mine, ref, k = times[name], times["joint"], config.block
        rounds = min(len(mine), len(ref)) // k
        per_round = [
            statistics.median(mine[i * k : (i + 1) * k]) / statistics.median(ref[i * k : (i + 1) * k])
            for i in range(rounds)
        ]
        return statistics.median(per_round) if per_round else None

    for name, entry in results.items():
        if "error" not in entry:
            entry["time_ratio"] = paired_time_ratio(name)
            entry["mem_ratio"] = ratio(name, mem_key)
    return {
        "per_balancer": results,
        "cggm_time_ratio": results.get("cggm", {}).get("time_ratio"),
        "cggm_mem_ratio": ratio("cggm", mem_key),
        "cggm_rss_ratio": ratio("cggm", "peak_rss_bytes"),
        "mem_ratio_measure": mem_key,
    }


# ------------------------------------------------------------------------------------------ inference


def _write_case(folder: Path, shape: Sequence[int], seed: int = 0) -> list[str]:
    """Write one phantom case in the BraTS folder layout; the four modality files in network order."""
    from brats_cggm.brats.phantoms import phantom_case_id, write_phantom_dataset

    write_phantom_dataset(folder, n=1, shape=tuple(shape), seed=seed)
    case = phantom_case_id(0)
    return [str(folder / case / f"{case}_{m}.nii.gz") for m in _MODALITIES]


def _inference_worker(payload: dict[str, Any]) -> dict[str, Any]:
    from brats_cggm.brats.inference import BratsSegmenter, CaseInput, InferenceSettings, save_like_reference
    from brats_cggm.brats.network import build_network

    spec = StepSpec.from_json(payload["spec"])
    device = torch.device(spec.device)
    files = payload["files"]
    out_dir = Path(payload["out_dir"])
    torch.manual_seed(spec.seed)
    overrides = {"features": spec.features} if spec.features is not None else {}
    network = build_network(spec.preset, modalities=spec.modalities, **overrides)
    settings = InferenceSettings(
        modalities=tuple(spec.modalities),
        roi_size=tuple(payload["roi"]),
        overlap=float(payload["overlap"]),
        sw_batch_size=int(payload["sw_batch"]),
        source="benchmark",
    )
    segmenter = BratsSegmenter(network, settings, device=device)
    case = CaseInput("bench", list(files))
    # The network-only reference: the sliding window on the preprocessed tensor of the same case.
    tensor = segmenter.preprocessing(case)({"image": list(files)})["image"].as_tensor().unsqueeze(0)
    autocast = torch.autocast("cuda", dtype=torch.float16) if segmenter.amp else contextlib.nullcontext()

    def network_only() -> float:
        start = time.perf_counter()
        with torch.no_grad(), autocast:
            logits = segmenter.inferer(tensor.to(device), segmenter.predictor)
        _sync(device)
        del logits
        return time.perf_counter() - start

    def end_to_end(rep: int) -> dict[str, float]:
        start = time.perf_counter()
        segmenter.check(case)
        checked = time.perf_counter()
        result = segmenter(case)
        written = time.perf_counter()
        save_like_reference(result["labels"], case.reference, out_dir / f"bench_{rep}.nii.gz")
        end = time.perf_counter()
        return {
            "total": end - start,
            "check": checked - start,
            **result["times"],
            "write": end - written,
        }

    # one whole untimed pass (kernel selection, allocator growth to the full-volume buffers): in the timed
    # reps neither side pays it; a one-window warm-up left the first (end-to-end) side up to 15 % slower
    network_only()
    net_times, e2e = [], []
    for rep in range(int(payload["reps"])):
        e2e.append(end_to_end(rep))
        net_times.append(network_only())
    if device.type == "cuda":
        torch.cuda.synchronize()
    totals = [r["total"] for r in e2e]
    out: dict[str, Any] = {
        "seconds_per_case": statistics.median(totals),
        "network_only_s": statistics.median(net_times),
        "end_to_end_s": [round(t, 4) for t in totals],
        "network_only_runs_s": [round(t, 4) for t in net_times],
        "stages_s": {k: round(statistics.median(r[k] for r in e2e), 4) for k in e2e[0] if k != "total"},
        "preprocessed_shape": list(tensor.shape[1:]),
        "amp": segmenter.amp,
        "peak_rss_bytes": _peak_rss(),
    }
    if device.type == "cuda":
        out["cuda_peak_bytes"] = torch.cuda.max_memory_allocated()
    out["infer_ratio"] = out["seconds_per_case"] / out["network_only_s"]
    return out


def inference_benchmark(config: BenchmarkConfig, work_dir: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Whole-volume inference, end to end against the sliding window alone (see the module docstring).

    With ``config.memory`` it runs in a fresh subprocess so that its peak resident memory is its own.

    Args:
        config: the run's configuration (``base``, ``infer_*``, ``memory``).
        work_dir: scratch folder (the case and the segmentations are written there).
        log: progress messages.

    Returns:
        ``seconds_per_case``, ``network_only_s``, ``infer_ratio``, the stage times, ``peak_rss_bytes``, ...
    """
    case_dir = work_dir / "inference_case"
    log(f"  writing a {'x'.join(map(str, config.infer_shape))} four-modality phantom case")
    files = _write_case(case_dir, config.infer_shape, seed=100)
    out_dir = work_dir / "inference_out"
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {
        "spec": config.base.to_json(),
        "files": files,
        "out_dir": str(out_dir),
        "roi": list(config.infer_roi),
        "overlap": config.infer_overlap,
        "sw_batch": config.infer_sw_batch,
        "reps": config.infer_reps,
    }
    log(f"  segmenting (window {config.infer_roi}, overlap {config.infer_overlap}, {config.infer_reps} rep(s))")
    result = _run_worker("inference", payload) if config.memory else _inference_worker(payload)
    result.update(
        {
            "case_shape": list(config.infer_shape),
            "roi": list(config.infer_roi),
            "overlap": config.infer_overlap,
            "sw_batch_size": config.infer_sw_batch,
            "preset": config.base.preset,
            "measured_in_subprocess": config.memory,
        }
    )
    return result


# -------------------------------------------------------------------------------------- data pipeline


def _bundle_loader(config: BenchmarkConfig, dataset_dir: Path) -> Any:
    """The bundle's ``train#dataloader`` on ``dataset_dir`` (every case for training), one patch per case."""
    from monai.bundle import ConfigParser

    from brats_cggm.brats.data import discover_dataset

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
    return parser.get_parsed_content("train#dataloader")


def data_pipeline_benchmark(
    config: BenchmarkConfig, work_dir: Path, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """The training step fed by the bundle's loader against the same step on a preloaded batch.

    Each round runs one epoch of the loader (``rounds`` steps of ``base.batch`` cases, each giving one
    patch) and as many steps on a batch taken from that loader before timing; both trainers start from the
    same weights.

    Args:
        config: the run's configuration (``base``, ``data_shape``, ``data_rounds``, ``data_workers``).
        work_dir: scratch folder for the phantom data set.
        log: progress messages.

    Returns:
        ``loader_step_s``, ``preloaded_step_s``, ``load_ratio``, ``cache_build_s`` and the settings.
    """
    base = dataclasses.replace(config.base, balancer="cggm")
    steps = 2
    n_cases = base.batch * steps
    data_dir = work_dir / "data_pipeline"
    log(f"  writing {n_cases} phantom cases of shape {'x'.join(map(str, config.data_shape))}")
    from brats_cggm.brats.phantoms import write_phantom_dataset

    write_phantom_dataset(data_dir, n=n_cases, shape=config.data_shape, seed=200)
    start = time.perf_counter()
    loader = _bundle_loader(config, data_dir)
    cache_build = time.perf_counter() - start
    preloaded = next(iter(loader))
    log(f"  timing loader vs preloaded batch: {config.data_rounds} alternating rounds of {len(loader)} step(s)")
    trainers = {
        "loader": build_trainer(base, loader),
        "preloaded": build_trainer(base, [preloaded] * len(loader)),
    }
    times = _alternate(trainers, config.warmup, config.data_rounds)
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


# -------------------------------------------------------------------------------------------- scaling


def _time_spec(spec: StepSpec, warmup: int, reps: int) -> dict[str, Any]:
    batch = synthetic_batch(spec)
    trainer = build_trainer(spec, [batch] * reps)
    for _ in range(warmup):
        _run_block(trainer)
    device = torch.device(spec.device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    result = _summary(_run_block(trainer))
    if device.type == "cuda":
        result["cuda_peak_bytes"] = torch.cuda.max_memory_allocated()
    del trainer
    return result


def scaling_benchmark(config: BenchmarkConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Step time (CGGM) against the patch size and against the number of modalities (at the base patch).

    Args:
        config: the run's configuration (``base``, ``scaling_patches``, ``scaling_modalities``,
            ``scaling_reps``, ``warmup``).
        log: progress messages.

    Returns:
        ``{"patch": [...], "modalities": [...]}``, one entry per point with ``step_time_s`` (and the CUDA
        peak on GPU).
    """
    out: dict[str, Any] = {"patch": [], "modalities": [], "balancer": config.base.balancer}
    for patch in config.scaling_patches:
        log(f"  patch {'x'.join(map(str, patch))}")
        spec = dataclasses.replace(config.base, patch=tuple(patch))
        out["patch"].append({"patch": list(patch), **_time_spec(spec, config.scaling_warmup, config.scaling_reps)})
    for count in config.scaling_modalities:
        log(f"  {count} modalities")
        spec = dataclasses.replace(config.base, modalities=_MODALITIES[:count])
        out["modalities"].append({"modalities": count, **_time_spec(spec, config.scaling_warmup, config.scaling_reps)})
    return out


def _variant_spec(base: StepSpec, variant: str) -> StepSpec:
    parts = set(variant.split("+")) - {"default"}
    unknown = parts - {"bf16", "fp16", "channels_last", "compile"}
    if unknown:
        raise ValueError(f"unknown variant option(s) {sorted(unknown)} in {variant!r}")
    amp = "bf16" if "bf16" in parts else "fp16" if "fp16" in parts else None
    return dataclasses.replace(base, amp=amp, channels_last="channels_last" in parts, compile="compile" in parts)


def variants_benchmark(config: BenchmarkConfig, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Step time of the base configuration with speed options (AMP, channels_last_3d, torch.compile).

    Args:
        config: the run's configuration (``base``, ``variants``, ``rounds``, ``warmup``).
        log: progress messages.

    Returns:
        One entry per variant: its name, ``step_time_s``, ``speedup`` over ``"default"`` (and the CUDA peak
        on GPU), or its ``error``.
    """
    results = []
    for variant in config.variants:
        log(f"  variant {variant}")
        try:
            spec = _variant_spec(config.base, variant)
            # compiling takes the first steps; give it more warm-up
            entry = {"variant": variant, **_time_spec(spec, config.warmup + (2 if spec.compile else 0), config.rounds)}
        except Exception as exc:
            entry = {"variant": variant, "error": f"{type(exc).__name__}: {exc}"}
        results.append(entry)
    reference = next((r["step_time_s"] for r in results if r["variant"] == "default" and "step_time_s" in r), None)
    for r in results:
        if reference and "step_time_s" in r:
            r["speedup"] = reference / r["step_time_s"]
    return results


# ------------------------------------------------------------------------------------------- the run


def _environment(device: str) -> dict[str, Any]:
    import monai

    env: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": device,
        "torch": torch.__version__,
        "monai": monai.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if names:
            env["cpu"] = names[0]
    with contextlib.suppress(OSError):
        env["load_average"] = list(os.getloadavg())
    if device == "cuda" and torch.cuda.is_available():
        env["device_name"] = torch.cuda.get_device_name(0)
        env["cuda"] = torch.version.cuda
        env["cudnn"] = torch.backends.cudnn.version()
    else:
        env["device_name"] = env["cpu"]
    return env


SECTIONS = ("balancers", "inference", "data", "scaling", "variants")


def run_benchmarks(
    config: BenchmarkConfig,
    sections: Sequence[str] = SECTIONS,
    work_dir: str | os.PathLike | None = None,
    log: Callable[[str], None] = print,
    on_section: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run the benchmark sections and collect their results.

    Args:
        config: sizes and repetitions (see :func:`benchmark_config`).
        sections: which of ``"balancers"``, ``"inference"``, ``"data"``, ``"scaling"``, ``"variants"`` to run.
        work_dir: where a new scratch folder ``run_*`` is made and kept (a temporary one, removed afterwards,
            when None).
        log: progress messages.
        on_section: called with the report so far after each section (e.g. to save partial results).

    Returns:
        The report: ``meta``, ``config``, one entry per section, the headline ratios at the top level
        (``cggm_time_ratio``, ``cggm_mem_ratio``, ``infer_ratio``, ``load_ratio``), ``targets`` and
        ``targets_met``.
    """
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise ValueError(f"unknown section(s) {sorted(unknown)}; choose from {SECTIONS}")
    device = torch.device(config.base.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: no CUDA device is available")
    report: dict[str, Any] = {
        "meta": _environment(device.type),
        "config": {
            **{k: v for k, v in dataclasses.asdict(config).items() if k != "base"},
            "base": config.base.to_json(),
            "memory_method": (
                "CUDA: torch.cuda.max_memory_allocated in a fresh subprocess per configuration"
                if device.type == "cuda"
                else "CPU: VmHWM of /proc/self/status in a fresh subprocess per configuration; "
                "step_peak_bytes = peak after setup (peak reset via /proc/self/clear_refs) minus VmRSS after setup"
            ),
            "timing_method": "median of per-step intervals between ignite ITERATION_COMPLETED events of "
            "BalancedTrainer.run(), configurations alternated in blocks",
        },
        "skipped": list(config.skipped),
    }
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if work_dir is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="brats_cggm_bench_")))
        else:
            # a new folder per run: earlier runs' data is neither reused nor overwritten
            Path(work_dir).mkdir(parents=True, exist_ok=True)
            work = Path(tempfile.mkdtemp(prefix="run_", dir=work_dir))
            report["work_dir"] = str(work)
        steps: list[tuple[str, Callable[[], Any]]] = [
            ("balancers", lambda: balancer_benchmark(config, log)),
            ("inference", lambda: inference_benchmark(config, work, log)),
            ("data", lambda: data_pipeline_benchmark(config, work, log)),
            ("scaling", lambda: scaling_benchmark(config, log)),
            ("variants", lambda: variants_benchmark(config, log)),
        ]
        for name, fn in steps:
            if name not in sections:
                continue
            log(f"[{name}]")
            t = time.perf_counter()
            report[name] = fn()
            report.setdefault("section_seconds", {})[name] = round(time.perf_counter() - t, 2)
            if on_section is not None:
                on_section(report)
    report["meta"]["total_seconds"] = round(time.perf_counter() - started, 2)
    headline = {
        "cggm_time_ratio": report.get("balancers", {}).get("cggm_time_ratio"),
        "cggm_mem_ratio": report.get("balancers", {}).get("cggm_mem_ratio"),
        "infer_ratio": report.get("inference", {}).get("infer_ratio"),
        "load_ratio": report.get("data", {}).get("load_ratio"),
    }
    report.update(headline)
    report["targets"] = dict(TARGETS)
    report["targets_met"] = {k: (None if v is None else v <= TARGETS[k]) for k, v in headline.items()}
    return report


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}{unit}"
    return f"{value}{unit}"


def _mib(value: Any) -> str:
    return "-" if value is None else f"{value / 2**20:.0f} MiB"


def format_report(report: dict[str, Any]) -> str:
    """A plain-text table of a report from :func:`run_benchmarks`."""
    meta = report["meta"]
    lines = [
        f"brats-cggm benchmark, {meta['date']}, {meta['device_name']} ({meta['device']}), torch {meta['torch']}",
        f"base step: {report['config']['base']}",
    ]
    if "balancers" in report:
        lines += ["", f"{'balancer':<12}{'step s':>10}{'x joint':>9}{'peak (step)':>14}{'x joint':>9}{'peak RSS':>11}"]
        for name, r in report["balancers"]["per_balancer"].items():
            if "error" in r:
                lines.append(f"{name:<12}  error: {r['error']}")
                continue
            peak = r.get("cuda_peak_bytes", r.get("step_peak_bytes"))
            lines.append(
                f"{name:<12}{_fmt(r.get('step_time_s')):>10}{_fmt(r.get('time_ratio')):>9}"
                f"{_mib(peak):>14}{_fmt(r.get('mem_ratio')):>9}{_mib(r.get('peak_rss_bytes')):>11}"
            )
    if "inference" in report:
        r = report["inference"]
        lines += [
            "",
            f"inference {r['case_shape']} (window {r['roi']}, overlap {r['overlap']}): "
            f"{_fmt(r['seconds_per_case'], ' s')} per case end to end, sliding window alone "
            f"{_fmt(r['network_only_s'], ' s')}, ratio {_fmt(r['infer_ratio'])}, "
            f"peak RSS {_mib(r.get('peak_rss_bytes'))}"
            + (f", CUDA peak {_mib(r['cuda_peak_bytes'])}" if "cuda_peak_bytes" in r else ""),
            f"  stages: {r['stages_s']}",
        ]
    if "data" in report:
        r = report["data"]
        lines += [
            "",
            f"data pipeline ({r['dataset']}, {r['num_workers']} workers): "
            f"loader step {_fmt(r['loader_step_s'], ' s')}, "
            f"preloaded {_fmt(r['preloaded_step_s'], ' s')}, ratio {_fmt(r['load_ratio'])}; "
            f"cache built in {_fmt(r['cache_build_s'], ' s')}",
        ]
    if "scaling" in report:
        lines += [
            "",
            "scaling (step s): "
            + ", ".join(
                f"{'x'.join(map(str, p['patch']))}: {_fmt(p['step_time_s'])}" for p in report["scaling"]["patch"]
            )
            + " | "
            + ", ".join(f"{m['modalities']} mod: {_fmt(m['step_time_s'])}" for m in report["scaling"]["modalities"]),
        ]
    if "variants" in report:
        lines += [
            "",
            "variants: "
            + ", ".join(
                f"{v['variant']}: "
                + (f"{_fmt(v['step_time_s'])} s (x{_fmt(v.get('speedup'))})" if "step_time_s" in v else v["error"])
                for v in report["variants"]
            ),
        ]
    lines += [
        "",
        "ratios (target): " + ", ".join(f"{k} {_fmt(report.get(k))} (<= {t})" for k, t in report["targets"].items()),
    ]
    if report.get("skipped"):
        lines.append("skipped: " + "; ".join(report["skipped"]))
    return "\n".join(lines)


def _write_json_atomic(path: Path, data: dict[str, Any], overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: exists; pass --overwrite to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="benchmark.py",
        description="Benchmark brats-cggm: balancer overhead, inference, data pipeline, scaling. "
        "Prints a table and writes a JSON report.",
    )
    p.add_argument("--out", required=True, help="JSON report to write (refused if it exists, unless --overwrite)")
    p.add_argument("--quick", action="store_true", help="fewer repetitions and sizes (CPU: < 10 min on 2 cores)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--preset", choices=("cpu", "full"), default="cpu", help="network preset of build_network")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    p.add_argument("--balancers", default=None, help="comma-separated balancer names (default: all registered)")
    p.add_argument("--no-memory", action="store_true", help="skip the subprocess peak-memory measurements")
    p.add_argument("--bundle-config", default=None, help="train.yaml whose loader is benchmarked")
    p.add_argument("--work-dir", default=None, help="scratch folder (default: a temporary one)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--tiny", action="store_true", help="toy sizes for smoke tests; the numbers mean nothing")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command line of ``scripts/benchmark.py``.

    Args:
        argv: arguments without the program name; ``sys.argv[1:]`` when None.

    Returns:
        0 on success, 1 when a benchmark failed, 2 for bad arguments.
    """
    args = _parser().parse_args(argv)
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        print(f"error: {out}: exists; pass --overwrite to replace it", file=sys.stderr)
        return 2
    if out.suffix != ".json":
        print(f"error: --out {out}: expected a .json file name", file=sys.stderr)
        return 2
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda: no CUDA device is available", file=sys.stderr)
        return 2
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    if set(sections) - set(SECTIONS):
        print(
            f"error: --sections: unknown {sorted(set(sections) - set(SECTIONS))}; choose from {SECTIONS}",
            file=sys.stderr,
        )
        return 2
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    config = benchmark_config(args.device, args.preset, quick=args.quick, tiny=args.tiny)
    if args.balancers:
        config.balancers = [b.strip() for b in args.balancers.split(",") if b.strip()]
    if args.no_memory:
        config.memory = False
    if args.bundle_config:
        config.bundle_config = args.bundle_config
    # the sections finished so far, in case a later one fails or the run is killed (time limits)
    partial = out.with_name(out.stem + ".partial.json")
    try:
        report = run_benchmarks(
            config,
            sections,
            args.work_dir,
            log=lambda m: print(m, flush=True),
            on_section=lambda r: _write_json_atomic(partial, r, overwrite=True),
        )
    except Exception as exc:
        print(f"error: benchmark failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        if partial.exists():
            print(f"the sections finished before the failure are in {partial}", file=sys.stderr)
        return 1
    report["meta"]["quick"] = args.quick
    print()
    print(format_report(report))
    _write_json_atomic(out, report, args.overwrite)
    partial.unlink(missing_ok=True)
    print(f"\nwrote {out}")
    return 0


def _worker_main(kind: str, payload_json: str) -> int:
    payload = json.loads(payload_json)
    if kind == "memory":
        result = _memory_worker(StepSpec.from_json(payload["spec"]), int(payload["steps"]))
    elif kind == "inference":
        result = _inference_worker(payload)
    else:
        raise ValueError(f"unknown worker {kind!r}")
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        sys.exit(_worker_main(sys.argv[2], sys.argv[3]))
    sys.exit(main())
