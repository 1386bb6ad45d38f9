"""Encoder weights of a :class:`~brats_cggm.brats.model.MultiEncoderUNet` in a file of their own.

``brats-cggm-select`` pretrains the encoders and saves them (:func:`save_encoder_weights`); a training run starts
from them with the bundle's ``init_encoders`` (:func:`load_encoder_weights`).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from brats_cggm.brats.model import MultiEncoderUNet
from brats_cggm.core.distributed import unwrap
from brats_cggm.core.files import atomic_path
from brats_cggm.core.safe_load import WeightsLoadError, load_tensors

__all__ = ["load_encoder_weights", "save_encoder_weights"]


def save_encoder_weights(path: str | os.PathLike, network: MultiEncoderUNet, overwrite: bool = False) -> Path:
    """Save the network's encoders for :func:`load_encoder_weights` (tensors, lists and strings only).

    The file holds ``{"modalities": [...], "features": [...], "encoders": {modality: state_dict}}``, written
    atomically.

    Args:
        path: the target ``.pt`` file.
        network: the network whose encoders to save.
        overwrite: replace an existing file.

    Returns:
        ``path``.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    payload = {
        "modalities": list(network.modalities),
        "features": list(network.features),
        "encoders": {
            m: {k: v.detach().cpu().clone() for k, v in enc.state_dict().items()}
            for m, enc in zip(network.modalities, network.encoders)
        },
    }
    with atomic_path(path, suffix=".pt", overwrite=overwrite) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def load_encoder_weights(network: nn.Module, path: str | os.PathLike | None) -> nn.Module:
    """Load encoders saved by :func:`save_encoder_weights` into ``network.encoders`` (the bundle's ``init_encoders``).

    Args:
        network: a :class:`MultiEncoderUNet`, or one wrapped (DDP, ``torch.compile``: see ``unwrap``).
        path: the file; None does nothing.

    Returns:
        ``network``.

    Raises:
        TypeError: ``network`` is not a (wrapped) :class:`MultiEncoderUNet`.
        FileNotFoundError: the file does not exist.
        ValueError: the file is not an encoder file, or its modalities or tensor shapes do not fit the network
            (naming the file and what differs).
    """
    if path is None:
        return network
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"init_encoders: {path} does not exist.")
    target = unwrap(network)
    if not isinstance(target, MultiEncoderUNet):
        raise TypeError(f"init_encoders: {type(target).__name__} is not a MultiEncoderUNet.")
    try:
        payload = load_tensors(path)
    except WeightsLoadError as exc:  # an unreadable file, or one holding more than tensors
        raise WeightsLoadError(f"init_encoders: {exc}; not a file of encoder weights.") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("encoders"), dict):
        raise ValueError(f"init_encoders: {path} has no 'encoders' entry; write it with brats-cggm-select.")
    saved = list(payload.get("modalities", []))
    if saved != list(target.modalities):
        raise ValueError(f"init_encoders: {path} holds encoders of {saved}, the network has {list(target.modalities)}.")
    for modality, encoder in zip(target.modalities, target.encoders):
        state = payload["encoders"][modality]
        own = encoder.state_dict()
        if set(state) != set(own):
            raise ValueError(f"init_encoders: {path}: the {modality} encoder's parameter names do not fit the network.")
        for key, value in state.items():
            if tuple(value.shape) != tuple(own[key].shape):
                raise ValueError(
                    f"init_encoders: {path}: {modality} encoder {key} has shape {tuple(value.shape)}, the network "
                    f"{tuple(own[key].shape)} (features {payload.get('features')} vs {list(target.features)})."
                )
        encoder.load_state_dict(state)
    return network
