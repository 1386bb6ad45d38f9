"""Loading a network for inference with the settings it was trained with.

A bundle folder's config is read with ``monai.bundle.ConfigParser`` (never restated here): its
``configs/inference.json`` (written by training into its ``output_dir`` by :func:`save_run_config`),
``configs/inference.yaml`` or ``configs/train.yaml``. Bundle configs are code (``$`` expressions run Python),
so only the user's own bundle folders are read that way.

A TorchScript or weights file is data: the configs that ``monai.bundle ckpt_export`` embeds in a TorchScript
file are read as plain JSON by :func:`plain_settings`, which never evaluates an expression.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from brats_cggm.brats.data.discovery import DEFAULT_MODALITIES
from brats_cggm.brats.inference.postprocessing_rules import RULES_KEY, PostprocessingRules
from brats_cggm.core.safe_load import load_tensors

__all__ = [
    "CONFIG_CANDIDATES",
    "RUN_CONFIG",
    "InferenceSettings",
    "find_bundle_config",
    "load_model",
    "plain_settings",
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
# Reference chains longer than this are treated as unreadable (and cycles end here).
_MAX_REFERENCE_DEPTH = 8


@dataclass
class InferenceSettings:
    """What inference needs besides the weights, as configured for training.

    Attributes:
        modalities: input channel order of the network.
        roi_size: sliding-window size (the training patch), or None if the config has none.
        overlap: sliding-window overlap.
        sw_batch_size: windows per forward pass.
        preprocessing: keyword arguments of :func:`~brats_cggm.brats.data.transforms.inference_transforms`
            (the config's ``data_options`` without its data-set entries).
        source: where the settings were read.
        postprocessing_rules: the config's post-processing thresholds (its ``postprocessing_rules`` entry, see
            :mod:`brats_cggm.brats.inference.postprocessing_rules`), or None when it has none.
    """

    modalities: tuple[str, ...] = DEFAULT_MODALITIES
    roi_size: tuple[int, ...] | None = None
    overlap: float = 0.5
    sw_batch_size: int = 4
    preprocessing: dict = field(default_factory=dict)
    source: str = ""
    postprocessing_rules: PostprocessingRules | None = None


def _network_description(network: torch.nn.Module) -> dict:
    # The resolved constructor arguments, so that a run's network is rebuilt exactly, whatever preset or
    # overlay produced it.
    names = ("modalities", "features", "out_channels", "spatial_dims", "norm", "act", "dropout")
    missing = [n for n in names if not hasattr(network, n)]
    if missing:
        raise TypeError(f"cannot describe a {type(network).__name__} network (no attributes {missing})")
    cls = type(network)
    return {"_target_": f"{cls.__module__}.{cls.__qualname__}", **{n: getattr(network, n) for n in names}}


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
    from brats_cggm.core.distributed import is_main_process
    from brats_cggm.core.files import write_json

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
    write_json(path, config)
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


#: Module paths of network classes that moved: run configs written by earlier versions name the old path.
_MOVED_TARGETS = {"brats_cggm.brats.network.": "brats_cggm.brats.model."}


def _parser(config: Any):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(config if isinstance(config, dict) else str(config))
    target = parser.get("network_def#_target_") if "network_def" in parser else None
    for old, new in _MOVED_TARGETS.items():
        if isinstance(target, str) and target.startswith(old):
            parser["network_def#_target_"] = new + target.removeprefix(old)
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
        rules = get(RULES_KEY, None)
        settings = InferenceSettings(
            modalities=tuple(get("modalities", DEFAULT_MODALITIES)),
            roi_size=None if roi is None else tuple(int(s) for s in roi),
            overlap=float(get("sw_overlap", 0.5)),
            sw_batch_size=int(get("sw_batch_size", 4)),
            preprocessing=preprocessing,
            source=source,
            postprocessing_rules=None if rules is None else PostprocessingRules.from_config(rules, source),
        )
        network = None
        if build:
            if "network_def" not in parser:
                raise ValueError("no 'network_def' entry")
            network = parser.get_parsed_content("network_def")
    except Exception as exc:
        raise ValueError(f"{source}: cannot read the bundle config: {' '.join(str(exc).split())}") from exc
    return settings, network


class _NotPlain(Exception):
    """A config value that is not plain data (an expression, an object to build, a macro)."""


def _lookup(config: Mapping[str, Any], path: str) -> Any:
    node: Any = config
    for part in path.split("#"):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise _NotPlain(f"reference @{path} to a missing entry")
    return node


def _plain_value(config: Mapping[str, Any], value: Any, depth: int = 0) -> Any:
    # Plain JSON data, with "@key" references followed by lookup only; anything MONAI would evaluate or
    # build ("$" expressions, "%" macros, "_target_" objects) is refused, never run.
    if depth > _MAX_REFERENCE_DEPTH:
        raise _NotPlain("too many nested references")
    if isinstance(value, str):
        if value.startswith("@"):
            return _plain_value(config, _lookup(config, value[1:]), depth + 1)
        if value.startswith(("$", "%")):
            raise _NotPlain(f"expression {value!r}")
        return value
    if isinstance(value, Mapping):
        if "_target_" in value or "_requires_" in value:
            raise _NotPlain("an object to build (_target_)")
        return {str(k): _plain_value(config, v, depth) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain_value(config, v, depth) for v in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    raise _NotPlain(f"unexpected value {value!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


#: key -> (check of the plain value, what is expected)
_PLAIN_CHECKS: dict[str, tuple[Any, str]] = {
    "modalities": (lambda v: isinstance(v, list) and v and all(isinstance(m, str) for m in v), "a list of names"),
    "patch_size": (lambda v: isinstance(v, list) and v and all(_is_int(s) and s > 0 for s in v), "positive ints"),
    "sw_overlap": (lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "sw_batch_size": (lambda v: _is_int(v) and v >= 1, "an int >= 1"),
}

#: data_options entry -> (check of the plain value, what is expected): the preprocessing options inference uses.
_OPTION_CHECKS: dict[str, tuple[Any, str]] = {
    "pixdim": (
        lambda v: v is None or (isinstance(v, list) and v and all(_is_number(s) and s > 0 for s in v)),
        "null or positive spacings in mm",
    ),
    "axcodes": (lambda v: isinstance(v, str), "orientation codes such as RAS"),
    "crop_foreground": (lambda v: isinstance(v, bool), "true or false"),
}


def _warn(message: str) -> None:
    # Points at the caller of plain_settings (load_model), not at this module's internals.
    warnings.warn(message, UserWarning, stacklevel=4)


def plain_settings(config: Mapping[str, Any], source: str) -> InferenceSettings:
    """Inference settings from a config held in a data file (e.g. embedded in TorchScript), evaluating nothing.

    Values are read as plain JSON data; an ``@key`` reference is followed by plain lookup of that key. A
    setting that would need evaluation (a ``$`` expression, a ``%`` macro, a ``_target_`` object), or that
    has the wrong type, is not used: it falls back to its default with a warning naming the key and ``source``.

    Args:
        config: the parsed JSON object.
        source: where it was read (for the warnings).

    Returns:
        The settings; ``preprocessing`` holds only the ``data_options`` entries that are plain data.
    """
    defaults = InferenceSettings()

    def read(key: str, default: Any) -> Any:
        if config.get(key) is None:
            return default
        try:
            value = _plain_value(config, config[key])
        except _NotPlain as exc:
            _warn(
                f"{source}: setting {key!r} is not plain data ({exc}); a model file's config is never evaluated: "
                f"using the default {default!r}"
            )
            return default
        check, expected = _PLAIN_CHECKS.get(key, (lambda v: True, ""))
        if value is not None and not check(value):
            _warn(f"{source}: setting {key!r} is {value!r}, expected {expected}: using the default {default!r}")
            return default
        return value

    if not isinstance(config, Mapping):
        _warn(f"{source}: the embedded config is not a JSON object: using the library defaults")
        return InferenceSettings(source=source)
    preprocessing = {}
    raw_options = config.get("data_options")
    if isinstance(raw_options, Mapping):
        for key in raw_options:
            if key in _DATASET_OPTIONS:
                continue
            if key not in _OPTION_CHECKS:
                _warn(f"{source}: unknown setting 'data_options#{key}': not used")
                continue
            try:
                value = _plain_value(config, raw_options[key])
            except _NotPlain as exc:
                _warn(
                    f"{source}: setting 'data_options#{key}' is not plain data ({exc}); a model file's config is "
                    "never evaluated: using the default"
                )
                continue
            check, expected = _OPTION_CHECKS[key]
            if not check(value):
                _warn(f"{source}: setting 'data_options#{key}' is {value!r}, expected {expected}: using the default")
                continue
            preprocessing[str(key)] = value
    elif raw_options is not None:
        _warn(f"{source}: setting 'data_options' is not a mapping: using the defaults")
    roi = read("patch_size", None)
    rules = read(RULES_KEY, None)
    if rules is not None:
        try:
            rules = PostprocessingRules.from_config(rules, source)
        except ValueError as exc:
            _warn(f"{exc}: no post-processing rules used")
            rules = None
    return InferenceSettings(
        modalities=tuple(read("modalities", list(defaults.modalities))),
        roi_size=None if roi is None else tuple(roi),
        overlap=float(read("sw_overlap", defaults.overlap)),
        sw_batch_size=int(read("sw_batch_size", defaults.sw_batch_size)),
        preprocessing=preprocessing,
        source=source,
        postprocessing_rules=rules,
    )


def _load_state_dict(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file does not exist")
    state = load_tensors(path)  # a WeightsLoadError (a ValueError) names the file and what was refused
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
                source = f"{ts_path}:{embedded[0]}"
                try:
                    config = json.loads(extra[embedded[0]])
                except (ValueError, UnicodeDecodeError) as exc:
                    raise ValueError(f"{source}: embedded config is not JSON: {exc}") from exc
                # A model file is data: its config is never handed to ConfigParser, which runs "$" expressions.
                settings = plain_settings(config, source)
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
