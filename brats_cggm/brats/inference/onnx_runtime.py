"""The network exported to ONNX and run by ONNX Runtime on the CPU: a window predictor the sliding window can call.

The export is MONAI's (:func:`monai.networks.convert_to_onnx`, through the TorchScript tracer), checked there
against the torch network on a sample window with ONNX Runtime. Batch and spatial axes are dynamic, so one export
serves any window size and the sliding window's last, smaller batch. Needs the ``onnx`` extra
(``pip install "brats-cggm[onnx]"``: onnx and onnxruntime), imported only when a predictor is built.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

__all__ = ["ONNX_ATOL", "ONNX_RTOL", "OnnxRuntimePredictor", "export_onnx_predictor"]

#: tolerances of the export's check against the torch network (float32 logits; the kernels of the two runtimes
#: sum in different orders, which moves logits of magnitude ~10 by ~1e-4)
ONNX_RTOL = 1e-3
ONNX_ATOL = 1e-3
_INPUT, _OUTPUT = "image", "logits"
_DYNAMIC = {0: "batch", 2: "x", 3: "y", 4: "z"}


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError as exc:  # the optional extra
        raise ImportError(
            'the ONNX Runtime backend needs onnx and onnxruntime: pip install "brats-cggm[onnx]"'
        ) from exc
    return onnxruntime


class OnnxRuntimePredictor(torch.nn.Module):
    """An ONNX model run by ONNX Runtime's CPU provider, called like the network it was exported from.

    Args:
        path: the ``.onnx`` file (input ``image``: ``(B, C, X, Y, Z)`` float32; output ``logits``).
        threads: ONNX Runtime's intra-op threads (None: torch's current ``get_num_threads``).
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        super().__init__()
        ort = _onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads or torch.get_num_threads())
        options.inter_op_num_threads = 1
        self.path = Path(path)
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of ``x``, a float32 tensor on the CPU (returned on ``x``'s device)."""
        array = x.detach().to("cpu", torch.float32).contiguous().numpy()
        (logits,) = self.session.run([_OUTPUT], {_INPUT: array})
        return torch.from_numpy(logits).to(x.device)


def export_onnx_predictor(
    network: torch.nn.Module,
    window: Sequence[int],
    path: str | os.PathLike,
    in_channels: int,
    batch: int = 1,
    threads: int | None = None,
) -> OnnxRuntimePredictor:
    """Export ``network`` to ``path`` and return its ONNX Runtime predictor.

    The export is verified by MONAI on one random sample window: ONNX Runtime's output must match the network's
    within :data:`ONNX_RTOL` / :data:`ONNX_ATOL`, else this raises and removes the file. MONAI's check reseeds
    the global random generators (``set_determinism(0)``).

    Args:
        network: the segmentation network, ``(B, in_channels, *window) -> (B, regions, *window)``, on the CPU.
        window: spatial size of the sample window (any size runs afterwards: the axes are dynamic).
        path: the ``.onnx`` file written (its folder must exist).
        in_channels: the network's input channels.
        batch: batch size of the sample.
        threads: ONNX Runtime's intra-op threads (None: torch's current ``get_num_threads``).

    Returns:
        The predictor.

    Raises:
        ImportError: onnx or onnxruntime is not installed.
        AssertionError: ONNX Runtime's output differs from the network's beyond the tolerances (from MONAI).
    """
    from monai.networks import convert_to_onnx

    _onnxruntime()
    sample = torch.randn(batch, in_channels, *(int(w) for w in window), generator=torch.Generator().manual_seed(0))
    was_training = network.training
    try:
        with warnings.catch_warnings():
            # torch's InstanceNorm compares its channel count with the input's: a constant, traced as one
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            convert_to_onnx(
                network.eval(),
                [sample],
                input_names=[_INPUT],
                output_names=[_OUTPUT],
                opset_version=17,
                dynamic_axes={_INPUT: _DYNAMIC, _OUTPUT: _DYNAMIC},
                filename=str(path),
                verify=True,
                device=torch.device("cpu"),
                use_ort=True,
                rtol=ONNX_RTOL,
                atol=ONNX_ATOL,
                # the TorchScript exporter: the torch.export one needs onnxscript and rejects data-dependent branches
                dynamo=False,
            )
    except BaseException:
        # an export that failed its check is not left behind to be mistaken for a good one
        Path(path).unlink(missing_ok=True)
        raise
    finally:
        network.train(was_training)
    return OnnxRuntimePredictor(path, threads=threads)
