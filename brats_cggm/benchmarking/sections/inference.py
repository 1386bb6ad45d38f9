"""Whole-volume inference: end to end as ``brats-cggm-infer`` runs it, against the sliding window alone.

Three measurements, in one process:

- **one case**: a four-modality phantom case is written as NIfTI and segmented with
  :class:`~brats_cggm.brats.inference.segmenter.BratsSegmenter`'s stages one after the other (read, check,
  preprocess, network, invert, write); the reference is the sliding window alone on the same preprocessed tensor;
- **a folder**: ``infer_folder_cases`` phantom cases segmented as ``brats-cggm-infer --input FOLDER`` does it
  (:class:`~brats_cggm.brats.inference.folder.CaseStages` through
  :func:`~brats_cggm.brats.inference.pipeline.run_pipeline`),
  with ``--workers 0`` (one case after the other) and with ``infer_workers``: cases per minute, seconds per case
  and per stage, and the ratio end to end / network;
- **two settings**: the folder again with the candidate window and overlap (``infer_candidate_roi``,
  ``infer_candidate_overlap``) beside the default ones, each with its mean Dice against the phantoms' labels
  and the ratio of their times in the same run. With random weights (no ``infer_bundle``) the Dice values
  only show the slot works: they say nothing of a setting's accuracy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from brats_cggm.benchmarking.config import MODALITIES, BenchmarkConfig, StepSpec
from brats_cggm.benchmarking.memory import peak_rss, run_worker
from brats_cggm.benchmarking.timing import sync
from brats_cggm.brats.inference.pipeline import STAGES

__all__ = ["folder_run", "inference_benchmark", "inference_worker", "phantom_dice", "write_case"]


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
            ``out_dir`` (where the segmentations are written), ``roi``, ``overlap``, ``sw_batch``, ``reps``,
            ``bundle`` (trained weights and preprocessing; None: random weights of ``spec``) and ``folder``
            (None, or ``input``, ``shape``, ``out_dir``, ``workers``, ``candidate_roi``, ``candidate_overlap``
            of the folder runs).

    Returns:
        ``seconds_per_case`` and ``network_only_s`` (medians), their runs, ``stages_s`` (of :data:`STAGES`),
        ``infer_ratio``, ``preprocessed_shape``, ``amp``, ``peak_rss_bytes`` and on CUDA ``cuda_peak_bytes`` (both
        of the one-case part); with ``folder``: ``folder`` (its runs, see :func:`folder_run`, and
        ``pipeline_speedup``), ``settings`` (default and candidate: window, overlap, seconds per case, mean
        Dice), ``candidate_speedup`` and ``candidate_dice_change``.
    """
    from brats_cggm.brats.inference.segmenter import BratsSegmenter, CaseInput, InferenceSettings, save_like_reference
    from brats_cggm.brats.model import build_network

    spec = StepSpec.from_json(payload["spec"])
    device = torch.device(spec.device)
    files = payload["files"]
    out_dir = Path(payload["out_dir"])
    torch.manual_seed(spec.seed)
    if payload.get("bundle"):
        from brats_cggm.brats.inference.model_loading import load_model

        network, trained = load_model(payload["bundle"], device=device)
        settings = dataclasses.replace(
            trained,
            roi_size=tuple(payload["roi"]),
            overlap=float(payload["overlap"]),
            sw_batch_size=int(payload["sw_batch"]),
        )
    else:
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
        # the stages of brats-cggm-infer --workers 0, one after the other
        times: dict[str, float] = {}
        start = time.perf_counter()
        images = segmenter.check(case, times=times)
        t = time.perf_counter()
        data = segmenter.prepare(case, images)
        times["preprocess"] = time.perf_counter() - t
        t = time.perf_counter()
        data = segmenter.predict(case, data)
        sync(device)
        times["network"] = time.perf_counter() - t
        result = segmenter.finish(case, data, times=times)
        t = time.perf_counter()
        save_like_reference(result["labels"], case.reference, out_dir / f"bench_{rep}.nii.gz")
        end = time.perf_counter()
        times["write"] = end - t
        return {"total": end - start, **{k: times[k] for k in STAGES}}

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
    folder = payload.get("folder")
    if folder:
        out.update(_folder_benchmark(segmenter, folder))
    return out


def _folder_benchmark(segmenter: Any, folder: dict[str, Any]) -> dict[str, Any]:
    """The folder runs of :func:`inference_worker`: ``--workers 0`` and ``workers``, then the candidate setting."""
    from brats_cggm.brats.inference.case_io import find_cases
    from brats_cggm.brats.inference.segmenter import BratsSegmenter

    cases, _ = find_cases(folder["input"], segmenter.settings.modalities)
    out_root = Path(folder["out_dir"])
    serial = folder_run(segmenter, cases, out_root / "workers_0", 0)
    piped = folder_run(segmenter, cases, out_root / f"workers_{folder['workers']}", int(folder["workers"]))
    candidate = BratsSegmenter(
        segmenter.network,
        segmenter.settings,
        device=segmenter.device,
        roi_size=folder["candidate_roi"],
        overlap=float(folder["candidate_overlap"]),
    )
    cand = folder_run(candidate, cases, out_root / "candidate", int(folder["workers"]))
    settings = []
    for name, seg, run in (("default", segmenter, piped), ("candidate", candidate, cand)):
        scores = phantom_dice(cases, Path(run["out_dir"]))
        settings.append(
            {
                "setting": name,
                "roi": list(seg.roi_size),
                "overlap": seg.inferer.overlap,
                "seconds_per_case": run["seconds_per_case"],
                "network_s": run["stages_s"]["network"],
                "mean_dice": scores["mean"],
                "dice": scores["regions"],
            }
        )
    return {
        "folder": {
            "cases": len(cases),
            "case_shape": list(folder["shape"]),
            "runs": [serial, piped],
            "pipeline_speedup": serial["seconds_per_case"] / piped["seconds_per_case"],
        },
        "settings": settings,
        # the old default's seconds per case over the candidate's: above 1, the candidate is faster
        "candidate_speedup": settings[0]["seconds_per_case"] / settings[1]["seconds_per_case"],
        "candidate_dice_change": settings[1]["mean_dice"] - settings[0]["mean_dice"],
    }


def folder_run(segmenter: Any, cases: Sequence[Any], out_dir: Path, workers: int) -> dict[str, Any]:
    """Segment ``cases`` into ``out_dir`` as ``brats-cggm-infer --workers WORKERS`` does, and time it.

    Args:
        segmenter: a :class:`~brats_cggm.brats.inference.segmenter.BratsSegmenter`.
        cases: the cases (:func:`~brats_cggm.brats.inference.case_io.find_cases`).
        out_dir: the output folder (must not hold the cases' outputs).
        workers: loader workers (0: one case after the other).

    Returns:
        ``workers``, ``wall_s``, ``seconds_per_case`` (wall clock / cases), ``cases_per_minute``, ``stages_s``
        (mean seconds of each stage per case, of :data:`STAGES`), ``e2e_over_network`` (seconds per case over the
        mean network time) and ``out_dir``.

    Raises:
        RuntimeError: a case failed (its failure line).
    """
    from brats_cggm.brats.inference.folder import CaseStages, OutputOptions
    from brats_cggm.brats.inference.pipeline import run_pipeline

    stages = CaseStages(segmenter, OutputOptions(Path(out_dir)), detach=workers > 0)
    start = time.perf_counter()
    results = list(run_pipeline(cases, stages.load, stages.predict, stages.finish, stages.describe, workers=workers))
    wall = time.perf_counter() - start
    failed = [r.failure for r in results if r.failure is not None]
    if failed:
        raise RuntimeError(f"benchmark folder run: {failed[0]}")
    stage_s = {k: statistics.mean(r.times[k] for r in results if r.times is not None) for k in STAGES}
    per_case = wall / len(cases)
    return {
        "workers": workers,
        "wall_s": round(wall, 4),
        "seconds_per_case": per_case,
        "cases_per_minute": 60.0 / per_case,
        "stages_s": {k: round(v, 4) for k, v in stage_s.items()},
        "e2e_over_network": per_case / stage_s["network"],
        "out_dir": str(out_dir),
    }


def phantom_dice(cases: Sequence[Any], out_dir: Path) -> dict[str, Any]:
    """Mean Dice (WT, TC, ET) of the segmentations in ``out_dir`` against the phantoms' ``<case>_seg`` labels.

    Args:
        cases: the phantom cases (their folders hold ``<case>_seg.nii.gz``, BraTS 2021 labels).
        out_dir: the segmentations, ``<case>.nii.gz``.

    Returns:
        ``regions``: mean Dice per region over the cases; ``mean``: their mean.
    """
    from brats_cggm.brats.data.nifti_checks import load_nifti
    from brats_cggm.brats.metrics.case_scores import dice
    from brats_cggm.brats.metrics.challenge_regions import challenge_region_masks

    regions = ("wt", "tc", "et")
    scores: dict[str, list[float]] = {r: [] for r in regions}
    for case in cases:
        reference = Path(case.reference)
        ref = np.asarray(load_nifti(reference.with_name(f"{case.case_id}_seg.nii.gz")).dataobj)
        pred = np.asarray(load_nifti(out_dir / f"{case.case_id}.nii.gz").dataobj)
        ref_masks = challenge_region_masks(ref, "brats2021", regions)
        pred_masks = challenge_region_masks(pred, "brats2021", regions)
        for r in regions:
            scores[r].append(dice(pred_masks[r], ref_masks[r]))
    means = {r: statistics.mean(v) for r, v in scores.items()}
    return {"regions": means, "mean": statistics.mean(means.values())}


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
    payload: dict[str, Any] = {
        "spec": config.base.to_json(),
        "files": files,
        "out_dir": str(out_dir),
        "roi": list(config.infer_roi),
        "overlap": config.infer_overlap,
        "sw_batch": config.infer_sw_batch,
        "reps": config.infer_reps,
        "bundle": config.infer_bundle,
    }
    if config.infer_folder_cases:
        from brats_cggm.brats.phantoms.geometric import write_phantom_dataset

        folder = work_dir / "inference_folder"
        shape = config.infer_folder_shape
        log(f"  writing a folder of {config.infer_folder_cases} phantom cases of {'x'.join(map(str, shape))}")
        write_phantom_dataset(folder, n=config.infer_folder_cases, shape=tuple(shape), seed=200)
        payload["folder"] = {
            "input": str(folder),
            "shape": list(shape),
            "out_dir": str(work_dir / "inference_folder_out"),
            "workers": config.infer_workers,
            "candidate_roi": list(config.infer_candidate_roi or config.infer_roi),
            "candidate_overlap": config.infer_candidate_overlap,
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
            "weights": config.infer_bundle or "random",
            "measured_in_subprocess": config.memory,
        }
    )
    return result
