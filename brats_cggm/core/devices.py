"""The one place a device is chosen from a name: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``."""

from __future__ import annotations

import torch

__all__ = ["resolve_device"]


def resolve_device(name: str | torch.device = "auto", cuda_index: int = 0) -> torch.device:
    """The device ``name`` stands for, checked against what this machine has.

    ``"auto"`` is CUDA when it is available, else the CPU. A CUDA device named without an index
    (``"auto"``, ``"cuda"``) is ``cuda:<cuda_index>``, so that a ``torchrun`` rank can pass its
    ``LOCAL_RANK``.

    Args:
        name: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a ``torch.device``.
        cuda_index: the CUDA device index for a name without one.

    Returns:
        The device.

    Raises:
        ValueError: ``name`` is not one of the forms above, CUDA is not available, or there is no CUDA
            device of that index.
    """
    if isinstance(name, str) and name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"bad device {name!r}: {exc}") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name}: CUDA is not available")
        if device.index is None:
            device = torch.device("cuda", cuda_index)
        if device.index >= torch.cuda.device_count():
            raise ValueError(f"device {name}: only {torch.cuda.device_count()} CUDA device(s)")
    elif device.type != "cpu":
        raise ValueError(f"bad device {name!r}: expected auto, cpu, cuda or cuda:N")
    return device
