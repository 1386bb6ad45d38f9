"""A sweep of CPU inference settings: Dice and seconds per case of each, against today's default in the same run.

Each setting of a grid (window as a multiple of the training patch or ``whole``, overlap, blending, torch threads,
bf16 autocast, channels_last, ``torch.compile``, the ONNX Runtime backend) segments every case of one or more
labelled phantom folders with a trained model, through
:class:`~brats_cggm.brats.inference.segmenter.BratsSegmenter`'s stages as ``brats-cggm-infer --workers 0`` runs them
(check, preprocess, network, invert, write). Per setting it reports the mean Dice (TC, WT, ET, their mean) of the
written segmentations against the labels, the seconds per case end to end and of the network, and their ratio to
the reference setting measured in the same run. Every setting is warmed up once (untimed; ``torch.compile``
compiles there, the ONNX export is checked there), then the settings are interleaved in rounds, their order rotated
each round, so that a slower or faster phase of a shared machine hits all of them alike.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.inferers import SlidingWindowInferer

from brats_cggm.benchmarking.config import BenchmarkConfig
from brats_cggm.benchmarking.memory import peak_rss, reset_peak_rss
from brats_cggm.benchmarking.sections.inference import phantom_dice

__all__ = [
    "SweepSetting",
    "format_sweep_table",
    "inference_settings_benchmark",
    "parse_setting",
    "window_size",
]

BLEND_MODES = ("gaussian", "constant")
DTYPES = ("fp32", "bf16")
BACKENDS = ("torch", "onnxruntime")
#: the whole-volume window is rounded up to a multiple of this (and of the network's divisor)
WHOLE_MULTIPLE = 8


@dataclasses.dataclass(frozen=True)
class SweepSetting:
    """One inference setting of the sweep.

    Attributes:
        window: the window as a multiple of the training patch, or ``"whole"`` (the preprocessed volume rounded up
            to a multiple of 8 and of the network's divisor).
        overlap: sliding-window overlap; None: the bundle's ``sw_overlap``.
        blend: ``SlidingWindowInferer`` mode, ``"gaussian"`` (today's) or ``"constant"``.
        threads: ``torch.set_num_threads``; None: the process's threads when the sweep starts.
        dtype: ``"fp32"`` or ``"bf16"`` (the network under ``torch.autocast("cpu", torch.bfloat16)``).
        channels_last: the network's weights and each window in ``torch.channels_last_3d``.
        compile: ``torch.compile`` the window predictor (compiled during the untimed warm-up).
        backend: ``"torch"``, or ``"onnxruntime"``: the network exported to ONNX and run by ONNX Runtime
            (:mod:`~brats_cggm.brats.inference.onnx_runtime`; exported and checked against torch during the
            warm-up; float32, the torch layout, no compile).
    """

    window: int | str = 1
    overlap: float | None = None
    blend: str = "gaussian"
    threads: int | None = None
    dtype: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    backend: str = "torch"

    def label(self) -> str:
        """The setting as ``parse_setting`` reads it, every key spelled out."""
        parts = [f"window={self.window}", f"overlap={self.overlap}", f"blend={self.blend}"]
        parts += [f"threads={self.threads}", f"dtype={self.dtype}"]
        parts += [k for k in ("channels_last", "compile") if getattr(self, k)]
        if self.backend != "torch":
            parts.append(f"backend={self.backend}")
        return ",".join(parts)


def _flag(key: str, value: str | None) -> bool:
    if value is None or value in ("1", "true", "yes"):
        return True
    if value in ("0", "false", "no"):
        return False
    raise ValueError(f"{key}={value}: expected 0 or 1 (or the bare flag {key!r})")


def parse_setting(spec: str, base: SweepSetting | None = None) -> SweepSetting:
    """A setting from ``key=value`` pairs separated by commas; keys left out keep ``base``'s values.

    Keys: ``window`` (a positive integer: multiple of the training patch; or ``whole``), ``overlap`` (in [0, 1)),
    ``blend`` (gaussian, constant), ``threads`` (a positive integer), ``dtype`` (fp32, bf16), ``channels_last`` and
    ``compile`` (bare flags, or ``=0``/``=1``), ``backend`` (torch, onnxruntime; onnxruntime runs fp32 without
    channels_last or compile). The empty string is ``base`` itself.

    Args:
        spec: e.g. ``"window=2,overlap=0.25,dtype=bf16"``.
        base: the values of keys not given (default: today's inference, :class:`SweepSetting`'s defaults).

    Returns:
        The setting.

    Raises:
        ValueError: an unknown key or a bad value, naming it.
    """
    values: dict[str, Any] = {}
    for token in (t.strip() for t in spec.split(",")):
        if not token:
            continue
        key, _, value = token.partition("=")
        key, raw = key.strip(), value.strip() if "=" in token else None
        if key in ("channels_last", "compile"):
            values[key] = _flag(key, raw)
            continue
        if raw is None or raw == "":
            raise ValueError(f"setting {spec!r}: {key!r} needs a value ({key}=...)")
        if key == "window":
            if raw == "whole":
                values[key] = "whole"
            elif raw.isdigit() and int(raw) >= 1:
                values[key] = int(raw)
            else:
                raise ValueError(f"setting {spec!r}: window={raw}: expected a positive integer multiple or 'whole'")
        elif key == "overlap":
            try:
                overlap = float(raw)
            except ValueError:
                overlap = -1.0
            if not 0.0 <= overlap < 1.0:
                raise ValueError(f"setting {spec!r}: overlap={raw}: expected a number in [0, 1)")
            values[key] = overlap
        elif key == "blend":
            if raw not in BLEND_MODES:
                raise ValueError(f"setting {spec!r}: blend={raw}: choose from {BLEND_MODES}")
            values[key] = raw
        elif key == "threads":
            if not raw.isdigit() or int(raw) < 1:
                raise ValueError(f"setting {spec!r}: threads={raw}: expected a positive integer")
            values[key] = int(raw)
        elif key == "dtype":
            if raw not in DTYPES:
                raise ValueError(f"setting {spec!r}: dtype={raw}: choose from {DTYPES}")
            values[key] = raw
        elif key == "backend":
            if raw not in BACKENDS:
                raise ValueError(f"setting {spec!r}: backend={raw}: choose from {BACKENDS}")
            values[key] = raw
        else:
            raise ValueError(
                f"setting {spec!r}: unknown key {key!r}; keys: window, overlap, blend, threads, dtype, "
                "channels_last, compile, backend"
            )
    setting = dataclasses.replace(base or SweepSetting(), **values)
    if setting.backend == "onnxruntime" and (setting.dtype != "fp32" or setting.channels_last or setting.compile):
        raise ValueError(f"setting {spec!r}: backend=onnxruntime runs fp32 without channels_last or compile")
    return setting


def window_size(window: int | str, patch: Sequence[int], shape: Sequence[int], divisor: int = 1) -> tuple[int, ...]:
    """The sliding-window size of a setting for one case.

    Args:
        window: a multiple of the training patch, or ``"whole"``.
        patch: the training patch.
        shape: the preprocessed (cropped) volume's spatial shape.
        divisor: the network's size divisor.

    Returns:
        ``window * patch``, or ``shape`` rounded up to a multiple of 8 and of ``divisor``.
    """
    if window == "whole":
        step = math.lcm(WHOLE_MULTIPLE, max(int(divisor), 1))
        return tuple(-(-int(s) // step) * step for s in shape)
    return tuple(int(window) * int(p) for p in patch)


class _WindowPredictor(torch.nn.Module):
    """The network as one setting runs it on a window: optionally channels_last input and bf16 autocast."""

    def __init__(self, network: torch.nn.Module, bf16: bool, channels_last: bool) -> None:
        super().__init__()
        self.network = network
        self.bf16 = bf16
        self.channels_last = channels_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            y = self.network(x)
        # the stitching buffer is float32 and contiguous whatever the network ran in
        return y.float().contiguous()


def _predictor(
    network: torch.nn.Module, setting: SweepSetting, patch: Sequence[int], in_channels: int, onnx_file: Path
) -> torch.nn.Module:
    """The window predictor of ``setting`` (the network itself for fp32 without layout or compile options;
    an ONNX Runtime session of the network, exported to ``onnx_file``, for ``backend=onnxruntime``)."""
    if setting.backend == "onnxruntime":
        from brats_cggm.brats.inference.onnx_runtime import export_onnx_predictor

        onnx_file.parent.mkdir(parents=True, exist_ok=True)
        return export_onnx_predictor(network, patch, onnx_file, in_channels, threads=setting.threads)
    if setting.dtype == "fp32" and not setting.channels_last and not setting.compile:
        return network
    net = network
    if setting.channels_last:
        # a copy: the other settings keep the network's own layout
        net = copy.deepcopy(network).to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]
    predictor: torch.nn.Module = _WindowPredictor(net, setting.dtype == "bf16", setting.channels_last).eval()
    if setting.compile:
        predictor = torch.compile(predictor)  # type: ignore[assignment]
    return predictor


def _segment(segmenter: Any, setting: SweepSetting, patch: Sequence[int], case: Any, out_file: Path) -> dict[str, Any]:
    """Segment ``case`` with ``setting`` as ``brats-cggm-infer --workers 0`` does: its seconds (``total``,
    ``network``), window (``roi``) and preprocessed shape (``shape``)."""
    from brats_cggm.brats.inference.segmenter import save_like_reference

    start = time.perf_counter()
    images = segmenter.check(case)
    data = segmenter.prepare(case, images)
    shape = tuple(data["image"].shape[1:])
    roi = window_size(setting.window, patch, shape, getattr(segmenter.network, "divisor", 1))
    segmenter.inferer = SlidingWindowInferer(
        roi_size=roi,
        sw_batch_size=segmenter.inferer.sw_batch_size,
        overlap=segmenter.inferer.overlap,
        mode=setting.blend,
        sw_device=segmenter.device,
    )
    t = time.perf_counter()
    data = segmenter.predict(case, data)
    network = time.perf_counter() - t
    result = segmenter.finish(case, data)
    save_like_reference(result["labels"], case.reference, out_file)
    timing = {"total": time.perf_counter() - start, "network": network}
    return {**timing, "roi": list(roi), "shape": list(shape)}


def _cases(config: BenchmarkConfig, work_dir: Path, modalities: Sequence[str], log: Callable[[str], None]) -> list:
    """The sweep's cases, each with the name of its data set: the given folders or fresh phantoms."""
    from brats_cggm.brats.inference.case_io import find_cases

    folders = [Path(f) for f in config.sweep_data]
    if not folders:
        from brats_cggm.brats.phantoms.geometric import write_phantom_dataset

        folder = work_dir / "sweep_phantoms"
        shape = config.sweep_shape
        log(f"  writing {config.sweep_cases} phantom cases of {'x'.join(map(str, shape))}")
        write_phantom_dataset(folder, n=config.sweep_cases, shape=tuple(shape), seed=300)
        folders = [folder]
    keep: set[str] | None = None
    if config.sweep_split:
        keep = set(json.loads(Path(config.sweep_split).read_text())["validation"])
    out = []
    for folder in folders:
        cases, _ = find_cases(folder, modalities)
        chosen = [c for c in cases if keep is None or c.case_id in keep][: config.sweep_cases]
        if not chosen:
            raise ValueError(f"sweep data {folder}: no case (after the --sweep-split filter)")
        out += [(folder.name, c) for c in chosen]
    return out


def inference_settings_benchmark(
    config: BenchmarkConfig, work_dir: Path, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Segment the sweep's cases with every setting and report Dice, seconds and ratios to the reference.

    Runs in this process, on the CPU, with the trained weights of ``config.infer_bundle``.

    Args:
        config: the run's configuration (``infer_bundle``, ``sweep_*``).
        work_dir: scratch folder (phantoms when no ``sweep_data``, and every setting's segmentations).
        log: progress messages.

    Returns:
        ``settings``: one entry per setting, the reference first (``setting``, ``label``, ``mean_dice``, ``dice``
        per region, ``dice_by_dataset``, ``seconds_per_case``, ``network_s_per_case``, their runs per round,
        ``speedup`` and ``network_speedup`` (reference seconds over the setting's, medians of the same run),
        ``dice_change``, ``warmup_s``, ``windows`` and ``preprocessed_shapes`` (per case), ``peak_rss_bytes``, or
        ``error``); ``cases``, ``rounds``, ``memory_method``.

    Raises:
        ValueError: no ``infer_bundle``, or a bad setting.
    """
    from brats_cggm.brats.inference.model_loading import load_model
    from brats_cggm.brats.inference.segmenter import BratsSegmenter

    if not config.infer_bundle:
        raise ValueError(
            "the inference_settings section needs a trained model (--infer-bundle RUN_OR_BUNDLE): "
            "its Dice values are what it compares"
        )
    device = torch.device("cpu")
    network, trained = load_model(config.infer_bundle, device=device)
    if trained.roi_size is None:
        raise ValueError(f"{config.infer_bundle}: its config has no patch_size, the sweep's window unit")
    patch = tuple(int(p) for p in trained.roi_size)
    base_threads = torch.get_num_threads()
    reference = parse_setting(config.sweep_reference)
    reference = dataclasses.replace(
        reference,
        overlap=trained.overlap if reference.overlap is None else reference.overlap,
        threads=reference.threads or base_threads,
    )
    settings = [reference]
    for spec in config.sweep_settings:
        s = parse_setting(spec, reference)
        if s not in settings:
            settings.append(s)
    cases = _cases(config, work_dir, trained.modalities, log)
    log(f"  {len(settings)} settings x {len(cases)} cases x {config.sweep_rounds} round(s); patch {patch}")
    out_root = work_dir / "sweep_out"
    entries: list[dict[str, Any]] = []
    segmenters: list[Any] = []
    for i, s in enumerate(settings):
        entry: dict[str, Any] = {"setting": "reference" if i == 0 else f"s{i}", "label": s.label(), "runs": []}
        entries.append(entry)
        segmenter = BratsSegmenter(network, trained, device=device, overlap=s.overlap)
        segmenters.append(segmenter)
        torch.set_num_threads(int(s.threads or base_threads))
        # untimed: kernel selection, allocator growth, compilation, export
        t = time.perf_counter()
        try:
            onnx_file = out_root / f"network_{i}.onnx"
            segmenter.predictor = _predictor(network, s, patch, len(trained.modalities), onnx_file)
            _segment(segmenter, s, patch, cases[0][1], out_root / f"warmup_{i}.nii.gz")
        except Exception as exc:  # a setting this machine cannot run (e.g. compile without a compiler)
            entry["error"] = f"{type(exc).__name__}: {exc}"
            log(f"  {entry['setting']} {s.label()}: failed at warm-up: {entry['error']}")
        entry["warmup_s"] = round(time.perf_counter() - t, 3)
    for r in range(config.sweep_rounds):
        order = [(r + k) % len(settings) for k in range(len(settings))]
        for i in order:
            entry, s, segmenter = entries[i], settings[i], segmenters[i]
            if "error" in entry:
                continue
            torch.set_num_threads(int(s.threads or base_threads))
            reset_peak_rss()
            # one folder per round: outputs are never overwritten, and the Dice is of the last round's
            folder = out_root / entry["setting"] / f"round_{r}"
            folder.mkdir(parents=True, exist_ok=True)
            runs = [_segment(segmenter, s, patch, c, folder / f"{c.case_id}.nii.gz") for _, c in cases]
            entry["peak_rss_bytes"] = max(entry.get("peak_rss_bytes") or 0, peak_rss() or 0) or None
            entry["windows"] = [run["roi"] for run in runs]
            entry["preprocessed_shapes"] = [run["shape"] for run in runs]
            entry["runs"].append(
                {
                    "seconds_per_case": statistics.mean(run["total"] for run in runs),
                    "network_s_per_case": statistics.mean(run["network"] for run in runs),
                }
            )
        log(f"  round {r + 1}/{config.sweep_rounds} done")
    torch.set_num_threads(base_threads)
    for entry in entries:
        if "error" in entry:
            continue
        entry["seconds_per_case"] = statistics.median(run["seconds_per_case"] for run in entry["runs"])
        entry["network_s_per_case"] = statistics.median(run["network_s_per_case"] for run in entry["runs"])
        folder = out_root / entry["setting"] / f"round_{config.sweep_rounds - 1}"
        by_dataset: dict[str, Any] = {}
        for name in dict.fromkeys(n for n, _ in cases):
            by_dataset[name] = phantom_dice([c for n, c in cases if n == name], folder)
        everything = phantom_dice([c for _, c in cases], folder)
        entry.update(dice=everything["regions"], mean_dice=everything["mean"], dice_by_dataset=by_dataset)
    ref = entries[0]
    if "error" in ref:
        raise RuntimeError(f"the reference setting failed: {ref['error']}")
    for entry in entries:
        if "error" in entry:
            continue
        entry["speedup"] = ref["seconds_per_case"] / entry["seconds_per_case"]
        entry["network_speedup"] = ref["network_s_per_case"] / entry["network_s_per_case"]
        entry["dice_change"] = entry["mean_dice"] - ref["mean_dice"]
    return {
        "bundle": str(config.infer_bundle),
        "patch": list(patch),
        "cases": [{"dataset": n, "case_id": c.case_id} for n, c in cases],
        "rounds": config.sweep_rounds,
        "base_threads": base_threads,
        "settings": entries,
        "memory_method": "VmHWM of /proc/self/status after resetting it (/proc/self/clear_refs) before each "
        "setting's pass over the cases: the whole process (model, data, earlier settings' leftovers), max over rounds",
    }


def format_sweep_table(result: dict[str, Any]) -> str:
    """The sweep as a markdown table, one row per setting.

    Args:
        result: :func:`inference_settings_benchmark`'s return value.

    Returns:
        The table (Dice per region and mean, seconds per case, speed-ups against the reference, peak RSS).
    """
    lines = [
        "| setting | TC | WT | ET | mean Dice | Δ mean | s/case | network s/case | speed-up | network speed-up "
        "| peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in result["settings"]:
        label = e["label"] if e["setting"] != "reference" else f"**reference** {e['label']}"
        if "error" in e:
            lines.append(f"| {label} | failed: {e['error'][:80]} |" + " |" * 9)
            continue
        d = e["dice"]
        rss = e.get("peak_rss_bytes")
        lines.append(
            f"| {label} | {d['tc']:.4f} | {d['wt']:.4f} | {d['et']:.4f} | {e['mean_dice']:.4f} "
            f"| {e['dice_change']:+.4f} | {e['seconds_per_case']:.3f} | {e['network_s_per_case']:.3f} "
            f"| {e['speedup']:.2f}x | {e['network_speedup']:.2f}x | {'-' if rss is None else f'{rss / 2**20:.0f}'} |"
        )
    return "\n".join(lines)
