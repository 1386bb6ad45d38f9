"""The training bundle's ``init_encoders`` key loads pre-trained encoders before training (docs/methods.md §8.5)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigWorkflow

from brats_cggm.brats.encoder_weights import load_encoder_weights, save_encoder_weights
from brats_cggm.brats.model import build_network
from brats_cggm.core.safe_load import WeightsLoadError
from tests.helpers.crafted_files import code_running_checkpoint, unsafe_advice

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "bundles" / "brats_cggm" / "configs"
TINY = {
    "max_epochs": 1,
    "val_interval": 1,
    "patch_size": [16, 16, 16],
    "network_def#features": [4, 8, 16],
    "phantoms": {"n": 3, "shape": [32, 32, 32], "seed": 0},
    "num_samples": 1,
    "sw_batch_size": 2,
    "device": "cpu",
}
MODALITIES = ("flair", "t1ce", "t1", "t2")


def _workflow(tmp_path: Path, phantom_dir: Path, **overrides) -> ConfigWorkflow:
    return ConfigWorkflow(
        config_file=str(CONFIGS / "train.yaml"),
        meta_file=str(CONFIGS / "metadata.json"),
        logging_file=str(CONFIGS / "logging.conf"),
        workflow_type="train",
        **{**TINY, "phantom_dir": str(phantom_dir), "output_dir": str(tmp_path / "out"), **overrides},
    )


def _messages(error: BaseException | None) -> str:
    parts = []
    while error is not None:
        parts.append(str(error))
        error = error.__cause__ or error.__context__
    return " | ".join(parts)


def test_init_encoders_loads_the_file_into_the_network_and_trains(tmp_path: Path):
    source = build_network("cpu", MODALITIES, features=(4, 8, 16))
    path = save_encoder_weights(tmp_path / "enc.pt", source)
    workflow = _workflow(tmp_path, tmp_path / "phantoms", init_encoders=str(path))
    workflow.initialize()
    network = workflow.parser.get_parsed_content("network_def")
    for a, b in zip(source.encoders.parameters(), network.encoders.parameters()):
        assert torch.equal(a, b)
    workflow.run()  # one epoch from the loaded encoders
    workflow.finalize()
    assert (tmp_path / "out" / "models" / "checkpoint.pt").is_file()


def test_an_encoder_file_that_does_not_fit_is_refused(tmp_path: Path):
    path = save_encoder_weights(tmp_path / "enc.pt", build_network("cpu", MODALITIES, features=(4, 8, 32)))
    workflow = _workflow(tmp_path, tmp_path / "phantoms", init_encoders=str(path))
    with pytest.raises(Exception) as info:
        workflow.initialize()
    assert "init_encoders" in _messages(info.value) and "enc.pt" in _messages(info.value)


def test_a_crafted_encoder_file_is_refused_without_unsafe_advice(tmp_path: Path):
    crafted = code_running_checkpoint(tmp_path / "enc.pt", tmp_path / "code_ran")
    with pytest.raises(WeightsLoadError) as info:
        load_encoder_weights(build_network("cpu", MODALITIES, features=(4, 8, 16)), crafted)
    assert str(info.value).startswith(f"init_encoders: {crafted}: refused, it holds more than tensors")
    workflow = _workflow(tmp_path, tmp_path / "phantoms", init_encoders=str(crafted))
    with pytest.raises(Exception) as info:
        workflow.initialize()
    message = _messages(info.value)
    assert f"{crafted}: refused" in message and unsafe_advice(message) == []
    assert not (tmp_path / "code_ran").exists()
