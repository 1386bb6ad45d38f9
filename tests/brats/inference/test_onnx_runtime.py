"""The ONNX Runtime predictor gives the torch network's logits, on windows and batches other than the export's."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from brats_cggm.brats.inference.onnx_runtime import (
    ONNX_ATOL,
    ONNX_RTOL,
    OnnxRuntimePredictor,
    export_onnx_predictor,
)
from brats_cggm.brats.model import build_network

pytest.importorskip("onnxruntime")


@pytest.fixture
def network() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_network("cpu", features=(4, 8, 16)).eval()


def test_exported_predictor_matches_the_network_on_other_shapes(tmp_path, network):
    predictor = export_onnx_predictor(network, (16, 16, 16), tmp_path / "net.onnx", in_channels=4, threads=1)
    assert (tmp_path / "net.onnx").is_file() and isinstance(predictor, OnnxRuntimePredictor)
    assert not network.training
    # the sliding window's last batch is smaller, and a whole-volume window is not a cube
    x = torch.randn(3, 4, 24, 16, 32, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = network(x)
    got = predictor(x)
    assert got.shape == expected.shape and got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=ONNX_RTOL, atol=ONNX_ATOL)
    # and not merely close to anything: another network's logits are far
    torch.manual_seed(1)
    with torch.inference_mode():
        other = build_network("cpu", features=(4, 8, 16)).eval()(x)
    assert (other - got).abs().max() > 100 * ONNX_ATOL


def test_missing_onnxruntime_names_the_extra(tmp_path, network, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ImportError, match=r"brats-cggm\[onnx\]"):
        export_onnx_predictor(network, (16, 16, 16), tmp_path / "net.onnx", in_channels=4)
    assert not (tmp_path / "net.onnx").exists()


def test_an_export_that_fails_its_check_leaves_no_file(tmp_path, network, monkeypatch):
    import monai.networks

    def failing_export(model, inputs, filename, **kwargs):
        Path(filename).write_bytes(b"not a checked model")
        raise AssertionError("outputs differ")

    monkeypatch.setattr(monai.networks, "convert_to_onnx", failing_export)
    network.train()
    with pytest.raises(AssertionError, match="outputs differ"):
        export_onnx_predictor(network, (16, 16, 16), tmp_path / "net.onnx", in_channels=4)
    assert not (tmp_path / "net.onnx").exists()
    assert network.training
