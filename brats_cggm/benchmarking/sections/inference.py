"""Whole-volume inference: end to end as ``brats-cggm-infer`` runs it, against the sliding window alone.

One four-modality phantom case is written as NIfTI and segmented with
:class:`~brats_cggm.brats.inference.segmenter.BratsSegmenter` (check and read the files, preprocess, sliding window,
invert, write the labels); the reference is the sliding window alone on the same preprocessed tensor.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from brats_cggm.benchmarking.config import MODALITIES, BenchmarkConfig, StepSpec
from brats_cggm.benchmarking.memory import peak_rss, run_worker
from brats_cggm.benchmarking.timing import sync

__all__ = ["inference_benchmark", "inference_worker", "write_case"]


def write_case(folder: Path, shape: Sequence[int], seed: int = 0) -> list[str]:
    """Write one phantom case in the BraTS folder layout.

    Args:
        folder: the data set folder (created).
        shape: the volume shape.
        seed: the phantom's seed.

    Returns:
        The four modality files, in network order.
    """
    from brats_cggm.brats.phantoms.geometric import phantom_case_id, write_phantom_dataset

    write_phantom_dataset(folder, n=1, shape=tuple(shape), seed=seed)
    case = phantom_case_id(0)
    return [str(folder / case / f"{case}_{m}.nii.gz") for m in MODALITIES]


def inference_worker(payload: dict[str, Any]) -> dict[str, Any]:
    """Time the inference of one case in this process (the ``"inference"`` worker).

    Args:
        payload: ``spec`` (a :meth:`StepSpec.to_json` dict), ``files`` (the case's modality files),
            ``out_dir`` (where the segmentations are written), ``roi``, ``overlap``, ``sw_batch`` and
            ``reps``.

    Returns:
        ``seconds_per_case`` and ``network_only_s`` (medians), their runs, ``stages_s``, ``infer_ratio``,
        ``preprocessed_shape``, ``amp``, ``peak_rss_bytes`` and on CUDA ``cuda_peak_bytes``.
    """
    from brats_cggm.brats.inference.segmenter import BratsSegmenter, CaseInput, InferenceSettings, save_like_reference
    from brats_cggm.brats.model import build_network

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
        sync(device)
        del logits
        return time.perf_counter() - start

    def end_to_end(rep: int) -> dict[str, float]:
        start = time.perf_counter()
        images = segmenter.check(case)
        checked = time.perf_counter()
        result = segmenter(case, images=images)
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
        "peak_rss_bytes": peak_rss(),
    }
    if device.type == "cuda":
        out["cuda_peak_bytes"] = torch.cuda.max_memory_allocated()
    out["infer_ratio"] = out["seconds_per_case"] / out["network_only_s"]
    return out


def inference_benchmark(config: BenchmarkConfig, work_dir: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Whole-volume inference, end to end against the sliding window alone.

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
    files = write_case(case_dir, config.infer_shape, seed=100)
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
    result = run_worker("inference", payload) if config.memory else inference_worker(payload)
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
