"""Encoder weights of a :class:`~brats_cggm.brats.model.MultiEncoderUNet` in a file of their own.

``brats-cggm-select`` pretrains the encoders and saves them (:func:`save_encoder_weights`);
:func:`combine_unimodal_encoders` takes them from one trained uni-modal run per modality (``brats-cggm-compare
--unimodal``'s ``unimodal-<m>`` runs: uni-modal pre-trained encoders, then fusion). A training run starts from
either file with the bundle's ``init_encoders`` (:func:`load_encoder_weights`), which loads the encoders and then
fine-tunes them with the rest of the network (nothing is frozen). From the command line::

    python -m brats_cggm.brats.encoder_weights --out runs/encoders.pt \\
        flair=runs/cmp/unimodal-flair t1ce=runs/cmp/unimodal-t1ce t1=runs/cmp/unimodal-t1 t2=runs/cmp/unimodal-t2
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from brats_cggm.brats.model import MultiEncoderUNet
from brats_cggm.core.distributed import unwrap
from brats_cggm.core.files import atomic_path
from brats_cggm.core.safe_load import WeightsLoadError, load_tensors

__all__ = ["combine_unimodal_encoders", "load_encoder_weights", "main", "save_encoder_weights"]


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
    encoders = {
        m: {k: v.detach().cpu().clone() for k, v in enc.state_dict().items()}
        for m, enc in zip(network.modalities, network.encoders)
    }
    return _write_encoder_file(path, list(network.modalities), list(network.features), encoders, overwrite)


def _write_encoder_file(
    path: str | os.PathLike,
    modalities: list[str],
    features: list[int],
    encoders: dict[str, dict[str, torch.Tensor]],
    overwrite: bool,
) -> Path:
    payload = {"modalities": modalities, "features": features, "encoders": encoders}
    with atomic_path(path, suffix=".pt", overwrite=overwrite) as tmp:
        torch.save(payload, tmp)
    return Path(path)


# The first encoder's tensors in a network's state dict; a uni-modal network has no other.
_ENCODER_PREFIX = "encoders.0."
_LEVEL_WIDTH = re.compile(r"^levels\.(\d+)\.conv1\.conv\.weight$")


def _unimodal_encoder(modality: str, run: str | os.PathLike) -> tuple[Path, dict[str, torch.Tensor], list[int]]:
    """The encoder of a uni-modal run's best network (``models/model.pt``, read as tensors only), and its widths."""
    run = Path(run)
    path = run / "models" / "model.pt" if run.is_dir() else run
    if not path.is_file():
        raise FileNotFoundError(f"{modality}: {path} does not exist (a uni-modal run's models/model.pt).")
    state = load_tensors(path)  # WeightsLoadError names the file
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{modality}: {path} is not a state dict of network weights.")
    if any(key.startswith("encoders.") and not key.startswith(_ENCODER_PREFIX) for key in state):
        raise ValueError(f"{modality}: {path} holds several encoders; expected a uni-modal run's network.")
    encoder = {
        k[len(_ENCODER_PREFIX) :]: v.detach().cpu().clone() for k, v in state.items() if k.startswith(_ENCODER_PREFIX)
    }
    widths = {int(m.group(1)): int(v.shape[0]) for k, v in encoder.items() if (m := _LEVEL_WIDTH.match(k))}
    if not widths or sorted(widths) != list(range(len(widths))):
        raise ValueError(f"{modality}: {path} has no MultiEncoderUNet encoder ({_ENCODER_PREFIX}levels.*).")
    return path, encoder, [widths[level] for level in range(len(widths))]


def combine_unimodal_encoders(
    path: str | os.PathLike,
    runs: Mapping[str, str | os.PathLike],
    modalities: Sequence[str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write an encoder file (:func:`save_encoder_weights`'s format) from one trained uni-modal run per modality.

    Each run is a training ``output_dir`` of a one-modality :class:`MultiEncoderUNet` (e.g. ``brats-cggm-compare
    --unimodal``'s ``unimodal-<m>``); its encoder is taken from the best validation's network,
    ``models/model.pt`` (or the file given instead of the folder), read with ``weights_only`` (nothing is
    unpickled). The encoders must have the same architecture (feature widths); the joint run loading the file
    with ``init_encoders`` must have the same modalities, in the same order, and the same ``features``. Nothing
    is written unless every run is read and fits.

    Args:
        path: the encoder file to write.
        runs: modality -> the uni-modal run folder (or its weights file).
        modalities: the joint network's modalities, in its order (the bundle's ``modalities``); every one needs a
            run and no other run is accepted. None: the order of ``runs``.
        overwrite: replace an existing file.

    Returns:
        ``path``.

    Raises:
        ValueError: a modality without a run or a run for another modality, a file that is not a uni-modal
            network's weights, or encoders of different widths (the message names the file).
        FileNotFoundError: a run's weights file is missing.
        WeightsLoadError: a file cannot be read as tensors, or holds more than tensors.
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    order = list(runs) if modalities is None else list(modalities)
    if len(set(order)) != len(order) or not order:
        raise ValueError(f"modalities must be distinct and at least one, got {order}.")
    missing = [m for m in order if m not in runs]
    extra = [m for m in runs if m not in order]
    if missing or extra:
        raise ValueError(f"one uni-modal run per modality of {order} is needed: missing {missing}, unexpected {extra}.")
    if not overwrite and Path(path).exists():
        raise FileExistsError(f"{path}: exists")
    encoders: dict[str, dict[str, torch.Tensor]] = {}
    reference: tuple[str, Path, list[int], dict[str, torch.Tensor]] | None = None
    for modality in order:
        source, encoder, widths = _unimodal_encoder(modality, runs[modality])
        if reference is None:
            reference = (modality, source, widths, encoder)
        else:
            first, first_source, first_widths, first_encoder = reference
            shapes = {k: tuple(v.shape) for k, v in encoder.items()}
            if widths != first_widths or shapes != {k: tuple(v.shape) for k, v in first_encoder.items()}:
                raise ValueError(
                    f"{modality}: {source} has an encoder of features {widths}, {first}'s {first_source} "
                    f"{first_widths} (or other parameters): the encoders must have one architecture."
                )
        encoders[modality] = encoder
    assert reference is not None
    return _write_encoder_file(path, order, reference[2], encoders, overwrite)


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


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m brats_cggm.brats.encoder_weights --out FILE MODALITY=RUN ...``: :func:`combine_unimodal_encoders`.

    Args:
        argv: arguments (without the program name); ``sys.argv[1:]`` when None.

    Returns:
        0 on success, 1 if a run could not be combined (nothing written), 2 for bad arguments.
    """
    parser = argparse.ArgumentParser(
        prog="python -m brats_cggm.brats.encoder_weights",
        description="Write an init_encoders file from one trained uni-modal run per modality.",
    )
    parser.add_argument("runs", nargs="+", metavar="MODALITY=RUN", help="a uni-modal run folder (or its model.pt)")
    parser.add_argument("--out", required=True, help="the encoder file to write (for the bundle's init_encoders)")
    parser.add_argument(
        "--modalities", nargs="+", help="the joint network's modalities, in order (default: the order of the runs)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    runs: dict[str, str] = {}
    for item in args.runs:
        modality, sep, run = item.partition("=")
        if not sep or not modality or not run or modality in runs:
            print(f"{parser.prog}: error: expected distinct MODALITY=RUN arguments, got {item!r}", file=sys.stderr)
            return 2
        runs[modality] = run
    try:
        out = combine_unimodal_encoders(args.out, runs, args.modalities, overwrite=args.overwrite)
    except (OSError, ValueError) as exc:  # WeightsLoadError is a ValueError
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {out}: encoders of {list(runs) if args.modalities is None else args.modalities}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
