"""Fixtures for the adapter tests: tiny data in each real format, tiny random BERT/ViT folders, a metric runner."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from ignite.engine import Engine

from brats_cggm.adapters import synthetic


@pytest.fixture(scope="session")
def mosi_pickle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A MulT-layout MOSI pickle (24/8/8 samples, L=6, dims 300/5/20). Read-only."""
    return synthetic.write_mosi_pickle(tmp_path_factory.mktemp("mosi") / "mosi_data.pkl")


@pytest.fixture(scope="session")
def iemocap_mmin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MMIN IEMOCAP feature tree, fold 1 (24/8/8 utterances of 3-8 frames). Read-only."""
    pytest.importorskip("h5py")
    return synthetic.write_iemocap_mmin(tmp_path_factory.mktemp("iemocap") / "features")


@pytest.fixture(scope="session")
def iemocap_pickle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A MulT-layout ``iemocap_data.pkl`` with (N, 4, 2) labels. Read-only."""
    return synthetic.write_iemocap_mult(tmp_path_factory.mktemp("iemocap_mult") / "iemocap_data.pkl")


@pytest.fixture(scope="session")
def food101_json(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Food-101 JSON layout, 3 classes, 12/6/6 samples with 20x20 JPEGs. Read-only: copy to modify."""
    pytest.importorskip("PIL")
    return synthetic.write_food101_json(tmp_path_factory.mktemp("food_json") / "food101")


@pytest.fixture(scope="session")
def food101_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Food-101 CSV layout (texts/*_titles.csv + images/<split>/<label>/), 15/6 samples. Read-only."""
    pytest.importorskip("PIL")
    return synthetic.write_food101_csv(tmp_path_factory.mktemp("food_csv") / "food101")


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 1-layer BERT (hidden 16) with its tokenizer, saved with ``save_pretrained``."""
    pytest.importorskip("transformers")
    return synthetic.write_tiny_bert(tmp_path_factory.mktemp("models") / "bert")


@pytest.fixture(scope="session")
def tiny_vit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 1-layer ViT (hidden 16, 16x16 images) with its image processor."""
    pytest.importorskip("transformers")
    return synthetic.write_tiny_vit(tmp_path_factory.mktemp("models") / "vit")


@pytest.fixture
def run_metrics() -> Callable[[dict, list[dict]], dict]:
    """``run(metrics, batches)``: attaches ``{name: metric}`` to an engine that passes each batch through
    as its output, runs one epoch and returns the computed metrics."""

    def run(metrics: dict, batches: list[dict]) -> dict:
        engine = Engine(lambda e, b: b)
        for name, metric in metrics.items():
            metric.attach(engine, name)
        return engine.run(batches, max_epochs=1).metrics

    return run
