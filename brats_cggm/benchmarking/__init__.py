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
* **Peak memory** — each configuration runs in a fresh subprocess (``python -m brats_cggm.benchmarking
  --worker ...``): the peak resident set size above the one after setup on CPU, the CUDA peak on GPU.
* **Inference** — one 240×240×155 four-modality phantom case written as NIfTI, segmented end to end with
  :class:`~brats_cggm.brats.inference.segmenter.BratsSegmenter` as ``brats-cggm-infer`` does, against the sliding window
  alone on the same preprocessed tensor, stage by stage; then a folder of phantom cases as ``brats-cggm-infer``
  runs it, one case after the other and pipelined (cases per minute, end to end / network), and the default
  inference setting against a candidate (mean Dice on the phantoms, time ratio).
* **Inference settings** (``--sections inference_settings``, with a trained model) — a grid of CPU inference
  settings (window, overlap, blending, threads, bf16, channels_last, ``torch.compile``), each segmenting labelled
  phantom folders: mean Dice and seconds per case, and the ratio to today's setting, interleaved in one run.
* **Data pipeline** — the step with the bundle's own loader (``train#dataloader`` of its ``train.yaml``)
  against the same step on one preloaded batch from that loader.
* **Scaling** — step time against the patch size and the number of modalities; on CUDA also AMP (bf16),
  ``channels_last_3d`` and ``torch.compile`` variants (channels_last on CPU too).

Modules:

* :mod:`~brats_cggm.benchmarking.config` — :class:`StepSpec`, :class:`BenchmarkConfig`,
  :func:`benchmark_config`, :data:`TARGETS`.
* :mod:`~brats_cggm.benchmarking.steps` — the measured step: :func:`synthetic_batch`, :func:`build_trainer`.
* :mod:`~brats_cggm.benchmarking.timing` — per-step intervals, alternated blocks, medians, paired ratios.
* :mod:`~brats_cggm.benchmarking.memory` — peak memory and the worker subprocess protocol.
* :mod:`~brats_cggm.benchmarking.sections` — one module per report section.
* :mod:`~brats_cggm.benchmarking.runner` — :func:`run_benchmarks`, the sections collected into one report.
* :mod:`~brats_cggm.benchmarking.report` — :func:`format_report` and the JSON file.
* :mod:`~brats_cggm.benchmarking.worker` — the worker subprocesses' entry (internal,
  ``python -m brats_cggm.benchmarking --worker``).

The command line is :mod:`brats_cggm.cli.benchmark` (``brats-cggm-benchmark``, the one entry point).

Run ``brats-cggm-benchmark --help``; results and their commands are in ``docs/performance.md``.
"""

from brats_cggm.benchmarking.config import TARGETS, BenchmarkConfig, StepSpec, benchmark_config
from brats_cggm.benchmarking.memory import measure_step_memory
from brats_cggm.benchmarking.report import format_report, write_report
from brats_cggm.benchmarking.runner import SECTIONS, run_benchmarks
from brats_cggm.benchmarking.sections import (
    balancer_benchmark,
    data_pipeline_benchmark,
    inference_benchmark,
    step_scaling_benchmark,
    variants_benchmark,
)
from brats_cggm.benchmarking.steps import build_trainer, synthetic_batch

__all__ = [
    "SECTIONS",
    "TARGETS",
    "BenchmarkConfig",
    "StepSpec",
    "balancer_benchmark",
    "benchmark_config",
    "build_trainer",
    "data_pipeline_benchmark",
    "format_report",
    "inference_benchmark",
    "measure_step_memory",
    "run_benchmarks",
    "step_scaling_benchmark",
    "synthetic_batch",
    "variants_benchmark",
    "write_report",
]
