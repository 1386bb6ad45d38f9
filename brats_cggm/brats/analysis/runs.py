"""A trained BraTS run loaded for study: its network, its cases, and the mean Dice of a predictor on them.

A run has two saved networks: the best validation's (``models/model.pt``) and the last epoch's (inside
``models/checkpoint.pt``); ``weights`` chooses (:func:`run_weights`), and a run that saved no best network is
refused under ``"best"`` rather than studied with another.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "REGIONS",
    "WEIGHTS",
    "LoadedRun",
    "as_tensor",
    "dice_row",
    "load_run",
    "mean_dice",
    "run_weights",
]


#: The Dice columns of every score: the BraTS regions and their mean.
REGIONS = ("TC", "WT", "ET", "mean")


#: A run's saved networks: the best validation's (``models/model.pt``) and the last epoch's (``models/checkpoint.pt``).
WEIGHTS = ("best", "last")


def as_tensor(value: Any) -> torch.Tensor:
    """A plain tensor of ``value`` (a MONAI ``MetaTensor``'s data, or anything ``torch.as_tensor`` takes).

    Args:
        value: a tensor, ``MetaTensor`` or array.

    Returns:
        The tensor.
    """
    return value.as_tensor() if hasattr(value, "as_tensor") else torch.as_tensor(value)


def dice_row(logits: torch.Tensor, regions: torch.Tensor) -> np.ndarray:
    """The Dice of TC, WT and ET (sigmoid of ``logits`` thresholded at 0.5) and their mean.

    Args:
        logits: ``(B, 3, ...)`` region logits.
        regions: the reference region masks, same shape.

    Returns:
        The four values (TC, WT, ET, mean), float64.
    """
    from brats_cggm.brats.task import modality_dice

    dice = modality_dice(logits.float(), regions.float()).cpu().numpy().astype(np.float64)
    return np.append(dice, dice.mean())


@torch.no_grad()
def mean_dice(predictor: nn.Module, cases: Sequence[dict], transform: Any, inferer: Any, device: Any) -> np.ndarray:
    """Mean over cases of the Dice (TC, WT, ET, mean) of ``predictor``'s whole-volume predictions.

    Args:
        predictor: the network (or probe) giving region logits.
        cases: the datalist items.
        transform: the preprocessing of a case (the run's validation transforms).
        inferer: the sliding-window inferer.
        device: where to compute.

    Returns:
        The four mean Dice values.
    """
    rows = []
    for item in cases:
        data = transform(dict(item))
        image, label = (
            as_tensor(data["image"]).unsqueeze(0).to(device),
            as_tensor(data["label"]).unsqueeze(0).to(device),
        )
        rows.append(dice_row(inferer(image, predictor), label))
    return np.mean(rows, axis=0)


@dataclass
class LoadedRun:
    """A trained run ready to be probed and valuated (:func:`load_run`).

    Attributes:
        network: the multi-encoder network, in eval mode.
        modalities: its input channels.
        train_cases: the datalist items it trained on (the bundle's split of the data set).
        val_cases: the items it validated on.
        options: the preprocessing options of its ``data_options`` (and the data set's label convention).
        roi_size: its training patch (the sliding window and the probe's patch).
        inferer: its sliding-window inferer.
        weights_file: the file the network's weights came from (:func:`run_weights`).
    """

    network: nn.Module
    modalities: tuple[str, ...]
    train_cases: list[dict]
    val_cases: list[dict]
    options: dict
    roi_size: tuple[int, ...]
    inferer: Any
    weights_file: Path | None = None


def run_weights(run_dir: str | Path, weights: str = "best") -> Path:
    """The file of one of a run's saved networks.

    ``"best"`` never falls back to another network: a report must be of the network it says it is. A run saves
    no best network when no validation improved on the first (or none ran); its last epoch's is then asked for
    explicitly. ``brats-cggm-compare`` always asks for ``"last"`` (its comparison reports the last validation's
    Dice), so runs without ``models/model.pt`` compare as before.

    Args:
        run_dir: the run's ``output_dir``.
        weights: ``"best"``: the best validation's network (``models/model.pt``); ``"last"``: the last epoch's
            (``models/checkpoint.pt``, which may not exist: loading it then names it).

    Returns:
        The weights file.

    Raises:
        ValueError: ``weights`` is not one of :data:`WEIGHTS`.
        FileNotFoundError: ``"best"`` and the run has no ``models/model.pt`` (the message names it and suggests
            ``--weights last``).
    """
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
    best, last = Path(run_dir) / "models" / "model.pt", Path(run_dir) / "models" / "checkpoint.pt"
    if weights == "last":
        return last
    if not best.is_file():
        raise FileNotFoundError(
            f"{best} does not exist: the run saved no best-validation network; use --weights last for its last "
            f"epoch's ({last})"
        )
    return best


def load_run(
    run_dir: Path,
    dataset_dir: str | Path | None = None,
    seed: int | None = None,
    val_fraction: float | None = None,
    device: Any = "cpu",
    weights: str = "best",
) -> LoadedRun:
    """Load one of a run's networks (:func:`run_weights`) and its cases.

    Args:
        run_dir: the run's ``output_dir``.
        dataset_dir: the data set it trained on; None: the one it recorded
            (:func:`~brats_cggm.brats.data.splits.record_split`).
        seed: its seed (the split); None: the recorded one. Runs that record their split need none
            (:func:`~brats_cggm.brats.data.splits.split_of_run`).
        val_fraction: its validation share; same rules.
        device: where to put the network.
        weights: which of its networks (:data:`WEIGHTS`).

    Returns:
        The loaded run.

    Raises:
        FileNotFoundError: the folder or its files are missing.
        ValueError: the network has no per-modality encoders, the run has no patch size, or its split is neither
            recorded nor given (or differs from the record).
    """
    from monai.inferers import SlidingWindowInferer

    from brats_cggm.brats.data.discovery import discover_dataset
    from brats_cggm.brats.data.splits import recorded_split, split_of_run
    from brats_cggm.brats.inference.model_loading import load_model

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist")
    if dataset_dir is None:
        record = recorded_split(run_dir)
        if record is None:
            raise ValueError(f"{run_dir} records no data set (configs/split.json): give the one it trained on")
        dataset_dir = record["dataset_dir"]
    weights_file = run_weights(run_dir, weights)
    network, settings = load_model(run_dir, weights_file, device=device)
    if not all(hasattr(network, a) for a in ("encoders", "features", "out_channels")):
        raise ValueError(f"{run_dir}: the network is not a multi-encoder network (no per-modality encoders)")
    modalities = tuple(settings.modalities)
    spec = discover_dataset(dataset_dir, modalities, validate="none")
    train_cases, val_cases = split_of_run(run_dir, spec.items, seed, val_fraction)
    if settings.roi_size is None:
        raise ValueError(f"{settings.source}: no patch_size to use as sliding window and probe patch")
    options = {"label_convention": spec.label_convention, "channel_order": spec.channel_order, **settings.preprocessing}
    inferer = SlidingWindowInferer(
        roi_size=list(settings.roi_size),
        sw_batch_size=int(settings.sw_batch_size),
        overlap=settings.overlap,
        mode="gaussian",
    )
    return LoadedRun(
        network, modalities, train_cases, val_cases, options, tuple(settings.roi_size), inferer, weights_file
    )
