"""The tiny benchmark configuration the benchmarking tests share (seconds per section; numbers mean nothing)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from brats_cggm.benchmarking import BenchmarkConfig, benchmark_config

#: The repository's bundle training config, whose loader the data-pipeline section measures.
BUNDLE_CONFIG = Path(__file__).resolve().parents[2] / "bundles" / "brats_cggm" / "configs" / "train.yaml"

#: The report's headline ratios.
HEADLINES = ("cggm_time_ratio", "cggm_mem_ratio", "infer_ratio", "load_ratio")


def tiny_config(**changes) -> BenchmarkConfig:
    """``benchmark_config(tiny=True)`` without warm-up, on smaller volumes, with the repository's bundle."""
    config = benchmark_config("cpu", "cpu", tiny=True)
    config.warmup = 0
    config.infer_shape = (32, 32, 24)
    config.data_shape = (24, 24, 24)
    config.bundle_config = str(BUNDLE_CONFIG)
    return dataclasses.replace(config, **changes)


@pytest.fixture(autouse=True)
def one_thread():
    """Toy convolutions gain nothing from threads, and on a busy CI machine spinning threads cost a lot."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
