"""Loading a network for inference with the settings it was trained with.

The network and the preprocessing settings are read from a bundle config with ``monai.bundle.ConfigParser``
(never restated here): a bundle folder's ``configs/inference.json`` (written by training into its
``output_dir`` by :func:`save_run_config`), ``configs/inference.yaml`` or ``configs/train.yaml``, or the
configs that ``monai.bundle ckpt_export`` embeds in a TorchScript file.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from brats_cggm.brats.data import DEFAULT_MODALITIES

__all__ = [
    "CONFIG_CANDIDATES",
    "RUN_CONFIG",
    "InferenceSettings",
    "find_bundle_config",
    "load_model",
    "save_run_config",
    "settings_from_config",
]

#: Where training saves what inference needs (relative to its ``output_dir``).
RUN_CONFIG = "configs/inference.json"

#: Config files looked for in a bundle folder, in order of preference.
CONFIG_CANDIDATES: tuple[str, ...] = (RUN_CONFIG, "configs/inference.yaml", "configs/train.yaml", "configs/train.json")

# data_options entries that describe the training data set, not the preprocessing: inference takes them
# from its own input (channel order of an MSD file) or the user (label convention).
_DATASET_OPTIONS = ("label_convention", "channel_order")
_TS_CONFIG_NAMES = ("inference.json", "train.json")


@dataclass
class InferenceSettings:
    """What inference needs besides the weights, as configured for training.

    Attributes:
        modalities: input channel order of the network.
        roi_size: sliding-window size (the training patch), or None if the config has none.
        overlap: sliding-window overlap.
        sw_batch_size: windows per forward pass.
        preprocessing: keyword arguments of :func:`~brats_cggm.brats.transforms.inference_transforms`
            (the config's ``data_options`` without its data-set entries).
        source: where the settings were read.
    """

    modalities: tuple[str, ...] = DEFAULT_MODALITIES
    roi_size: tuple[int, ...] | None = None
    overlap: float = 0.5
    sw_batch_size: int = 4
    preprocessing: dict = field(default_factory=dict)
    source: str = ""


def _network_description(network: torch.nn.Module) -> dict:
    # The resolved constructor arguments, so that a run's network is rebuilt exactly, whatever preset or
    # overlay produced it.
    names = ("modalities", "features", "out_channels", "spatial_dims", "norm", "act", "dropout")
    missing = [n for n in names if not hasattr(network, n)]
    if missing:
        raise TypeError(f"cannot describe a {type(network).__name__} network (no attributes {missing})")
    cls = type(network)
    return {"_target_": f"{cls.__module__}.{cls.__qualname__}", **{n: getattr(network, n) for n in names}}


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (torch.device, Path)):
        return str(value)
    return value


def save_run_config(
    output_dir: str | os.PathLike,
    network: torch.nn.Module,
    data_options: Mapping[str, Any] | None = None,
    roi_size: Sequence[int] | None = None,
    overlap: float = 0.5,
    sw_batch_size: int = 4,
) -> Path | None:
    """Save what inference needs to ``output_dir/configs/inference.json`` (atomically), at training start.

    Called from ``train.yaml``'s ``initialize`` so that a training ``output_dir`` works as ``--bundle``.
    The file is a bundle config with the keys inference reads: ``network_def``, ``modalities``,
    ``patch_size``, ``sw_overlap``, ``sw_batch_size`` and ``data_options``.

    Args:
        output_dir: the training output folder.
        network: the network being trained (its constructor arguments are saved).
        data_options: the training ``data_options`` (the data-set entries are kept for information only).
        roi_size: the training patch, used as the sliding window.
        overlap: sliding-window overlap.
        sw_batch_size: windows per forward pass.

    Returns:
        The file written, or None on a non-main distributed rank (which writes nothing).
    """
    from brats_cggm.engine.distributed import is_main_process
    from brats_cggm.engine.handlers import atomic_write_text

    if not is_main_process():
        return None
    options = dict(data_options or {})
    config = {
        "network_def": _network_description(network),
        "modalities": list(getattr(network, "modalities", DEFAULT_MODALITIES)),
        "patch_size": None if roi_size is None else [int(s) for s in roi_size],
        "sw_overlap": float(overlap),
        "sw_batch_size": int(sw_batch_size),
        "data_options": {k: v for k, v in options.items() if k not in _DATASET_OPTIONS},
        "training_data": {k: options[k] for k in _DATASET_OPTIONS if k in options},
    }
    path = Path(output_dir) / RUN_CONFIG
    atomic_write_text(path, json.dumps(_jsonable(config), indent=2) + "\n")
    return path


def find_bundle_config(bundle_dir: str | os.PathLike) -> Path:
    """The config file of a bundle folder or training ``output_dir`` (see :data:`CONFIG_CANDIDATES`).

    Args:
        bundle_dir: the folder.

    Returns:
        The first candidate that exists.

    Raises:
        FileNotFoundError: if the folder or all candidates are missing.
    """
    root = Path(bundle_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: bundle folder does not exist")
    for name in CONFIG_CANDIDATES:
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(
        f"{root}: no bundle config found (looked for {', '.join(CONFIG_CANDIDATES)}); a training output_dir "
        "has configs/inference.json when trained with this version of train.yaml"
    )


def _parser(config: Any):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(config if isinstance(config, dict) else str(config))
    return parser


def settings_from_config(config: str | os.PathLike | dict, build: bool = True) -> tuple[InferenceSettings, Any]:
    """Read the inference settings and, optionally, build the network, from a bundle config.

    Only the keys inference needs are resolved, so the data-set entries of ``train.yaml`` (which would
    scan, or generate, the training data) are never evaluated.

    Args:
        config: a config file (JSON or YAML) or its content.
        build: instantiate ``network_def``.

    Returns:
        ``(settings, network)``; ``network`` is None when ``build`` is False.

    Raises:
        ValueError: if the config cannot be read or has no ``network_def`` (when ``build``).
    """
    source = "<dict>" if isinstance(config, dict) else str(config)
    try:
        parser = _parser(config)

        def get(key: str, default: Any) -> Any:
            return parser.get_parsed_content(key) if key in parser and parser.get(key) is not None else default

        raw_options = parser.get("data_options", {})
        preprocessing = {}
        if isinstance(raw_options, dict):
            preprocessing = {
                k: parser.get_parsed_content(f"data_options#{k}") for k in raw_options if k not in _DATASET_OPTIONS
            }
        roi = get("patch_size", None)
        settings = InferenceSettings(
            modalities=tuple(get("modalities", DEFAULT_MODALITIES)),
            roi_size=None if roi is None else tuple(int(s) for s in roi),
            overlap=float(get("sw_overlap", 0.5)),
            sw_batch_size=int(get("sw_batch_size", 4)),
            preprocessing=preprocessing,
            source=source,
        )
        network = None
        if build:
            if "network_def" not in parser:
                raise ValueError("no 'network_def' entry")
            network = parser.get_parsed_content("network_def")
    except Exception as exc:
        raise ValueError(f"{source}: cannot read the bundle config: {' '.join(str(exc).split())}") from exc
    return settings, network


def _load_state_dict(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file does not exist")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path}: cannot read weights: {' '.join(str(exc).split())}") from exc
    # A training checkpoint holds the network's state next to the optimizer's, the heads', the trainer's.
    if isinstance(state, dict) and isinstance(state.get("network"), dict):
        state = state["network"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: not a state dict of network weights (nor a checkpoint with a 'network' entry)")
    return state


def load_model(
    bundle: str | os.PathLike | None = None,
    checkpoint: str | os.PathLike | None = None,
    torchscript: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
) -> tuple[torch.nn.Module, InferenceSettings]:
    """Load a network for inference and the settings it was trained with.

    Args:
        bundle: a bundle folder (``configs/`` plus ``models/model.pt``) or a training ``output_dir``.
        checkpoint: weights to use instead of ``bundle/models/model.pt``: a plain state dict or a training
            checkpoint (its ``"network"`` entry).
        torchscript: a TorchScript file (e.g. from ``monai.bundle ckpt_export``); its settings come from
            ``bundle`` when given, else from the configs embedded in the file.
        device: where to put the network.

    Returns:
        ``(network, settings)``, the network in eval mode on ``device``.

    Raises:
        FileNotFoundError: if a file or folder is missing.
        ValueError: if a file cannot be read or the weights do not fit the configured network.
    """
    device = torch.device(device)
    if torchscript is not None:
        ts_path = Path(torchscript)
        if not ts_path.is_file():
            raise FileNotFoundError(f"{ts_path}: TorchScript file does not exist")
        # The configs ckpt_export embeds, if any (a plain torch.jit.save file has none: they stay empty).
        extra = dict.fromkeys(_TS_CONFIG_NAMES, "")
        try:
            with warnings.catch_warnings():
                # torch's deprecation notice of TorchScript: nothing the user of an exported model can act on
                warnings.filterwarnings("ignore", message=".*torch.jit.load.* is deprecated")
                network = torch.jit.load(str(ts_path), map_location=device, _extra_files=extra)
        except Exception as exc:
            raise ValueError(f"{ts_path}: cannot load TorchScript: {' '.join(str(exc).split())}") from exc
        if bundle is not None:
            settings, _ = settings_from_config(find_bundle_config(bundle), build=False)
        else:
            embedded = [name for name in _TS_CONFIG_NAMES if extra.get(name)]
            if embedded:
                settings, _ = settings_from_config(json.loads(extra[embedded[0]]), build=False)
                settings.source = f"{ts_path}:{embedded[0]}"
            else:
                settings = InferenceSettings(source=f"{ts_path} (no embedded config: library defaults)")
        return network.eval(), settings
    if bundle is None:
        raise ValueError("no model given: pass a bundle folder (with a checkpoint) or a TorchScript file")
    config = find_bundle_config(bundle)
    settings, network = settings_from_config(config)
    weights = Path(checkpoint) if checkpoint is not None else Path(bundle) / "models" / "model.pt"
    state = _load_state_dict(weights)
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ValueError(f"{weights}: weights do not fit the network configured in {config}: {first}") from exc
    return network.to(device).eval(), settings
