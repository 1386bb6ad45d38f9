"""Imbalance diagnostics of a trained BraTS run: under-optimised encoders, missing-modality robustness, Shapley.

``brats-cggm-diagnose RUN_DIR [--unimodal M=RUN_DIR ...] --dataset-dir DIR --output-dir OUT``
(:mod:`brats_cggm.cli.diagnose`)

- **Under-optimisation gap of each modality's encoder.** Modality imbalance leaves the weaker modalities' encoders
  under-trained: a multimodal network's encoder for modality ``m`` has learnt less than the same encoder trained
  on ``m`` alone (Du et al., "On uni-modal feature learning in supervised multi-modal learning", ICML 2023;
  Wang, Tran and Feiszli, "What makes training multi-modal classification networks hard?", CVPR 2020). It is
  measured by *probing*: a fresh head shaped like the run's auxiliary heads
  (:class:`~brats_cggm.brats.model.SegmentationAuxHead`) is fitted on the **frozen** encoder's features of the run's
  training cases (:func:`fit_probe`: a fixed budget of steps chosen in advance, stopped early once the training
  loss plateaus), then scored by Dice on the validation cases. The same probe is fitted on the encoder of a run
  trained on ``m`` alone (the bundle with ``modalities: [m]``), so

      gap(m) = probe Dice(unimodal encoder) − probe Dice(multimodal encoder)

  compares encoders only (the probe is the same on both sides); ``gap_vs_network(m)`` = the unimodal network's
  own Dice − probe Dice(multimodal encoder) is reported too. A positive gap: the multimodal training left the
  encoder of ``m`` behind what ``m`` alone supports.
- **Missing-modality robustness.** The Dice of each of the 15 non-empty modality subsets, the others' inputs
  zeroed (:func:`brats_cggm.brats.analysis.valuation.valuate_cases`, which also gives the Shapley values),
  their mean and the worst subset.
- **Shapley shares** of each modality in the mean Dice (:mod:`brats_cggm.balancing.valuation`).
- **Lesion-wise Dice** of each region (:func:`lesionwise_dice`), the official BraTS evaluator's score, which counts
  every missed or spurious lesion as 0 where the global Dice hardly sees a small one.

A run has two saved networks: the best validation's (``models/model.pt``) and the last epoch's (inside
``models/checkpoint.pt``); ``weights`` chooses (:func:`run_weights`), and a run that saved no best network is
refused under ``"best"`` rather than diagnosed with another. Every report names the file it used
(``weights_file``). ``brats-cggm-compare`` asks for ``"last"``, whose Dice its comparison reports, so it never
needs ``models/model.pt``.

With several runs (seeds), every number is reported as mean ± standard deviation over the runs
(:func:`summarize_diagnoses`). :func:`write_diagnostics_report` writes ``diagnostics.json``, ``diagnostics.md`` and
plots (matplotlib, the ``plots`` extra).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from brats_cggm.balancing.valuation import subset_key
from brats_cggm.core.figures import import_pyplot, save_png

__all__ = [
    "DIAGNOSTICS_FILES",
    "REGIONS",
    "WEIGHTS",
    "EncoderProbe",
    "LoadedRun",
    "ProbeFit",
    "ProbeSettings",
    "case_lesionwise_dice",
    "diagnose_run",
    "diagnostics_markdown",
    "fit_probe",
    "has_plateaued",
    "lesionwise_dice",
    "load_run",
    "probe_encoder",
    "robustness_from_valuation",
    "run_weights",
    "summarize_diagnoses",
    "write_diagnostics_report",
]

logger = logging.getLogger(__name__)

#: The Dice columns of every score: the BraTS regions and their mean.
REGIONS = ("TC", "WT", "ET", "mean")
#: A run's saved networks: the best validation's (``models/model.pt``) and the last epoch's (``models/checkpoint.pt``).
WEIGHTS = ("best", "last")
#: What :func:`write_diagnostics_report` writes (the plots only with matplotlib installed).
DIAGNOSTICS_FILES = ("diagnostics.json", "diagnostics.md", "encoder_gap.png", "shapley.png", "subset_dice.png")


@dataclass(frozen=True)
class ProbeSettings:
    """How a probe is fitted; fixed in advance, the same for every encoder compared.

    The defaults were set on the encoders of one-modality runs of the anatomical phantoms, where a probe's fit
    can be judged; how they were chosen, and what the earlier settings gave, is in ``docs/results.md``.

    Attributes:
        max_steps: the budget of optimiser steps.
        min_steps: steps always taken before a plateau may stop the fit (with batches of a few random patches the
            loss is noisy; a short fit could stop on noise).
        plateau_window: steps per window of :func:`has_plateaued`.
        plateau_tolerance: stop when a window's mean loss improves on the previous one by less than this
            fraction.
        learning_rate: Adam's learning rate.
        batch_size: patches per step.
        patches_per_case: training patches drawn per training case (the bundle's random crops, drawn once).
        channels: width of the probe's internal path (the auxiliary heads' default).
        seed: seeds the probe's initialisation, the patches and their order.
    """

    max_steps: int = 3000
    min_steps: int = 400
    plateau_window: int = 200
    plateau_tolerance: float = 0.01
    learning_rate: float = 1e-2
    batch_size: int = 4
    patches_per_case: int = 4
    channels: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("max_steps", "min_steps", "plateau_window", "batch_size", "patches_per_case", "channels"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"probe setting {name} must be at least 1, got {getattr(self, name)}")
        if not self.learning_rate > 0 or self.plateau_tolerance < 0:
            raise ValueError("probe learning_rate must be positive and plateau_tolerance not negative")


@dataclass
class ProbeFit:
    """The course of one probe's fitting.

    Attributes:
        losses: the training loss of every step.
        steps: steps taken.
        plateaued: whether it stopped on a plateau (else: the budget ran out).
    """

    losses: list[float]
    steps: int
    plateaued: bool


def has_plateaued(losses: Sequence[float], window: int, tolerance: float) -> bool:
    """Whether the loss has stopped improving: the last ``window`` steps' mean loss is lower than the mean of the
    ``window`` steps before by less than ``tolerance`` times the latter.

    Args:
        losses: the loss of every step so far.
        window: steps per window.
        tolerance: the relative improvement below which the loss counts as flat.

    Returns:
        False while fewer than ``2 * window`` losses exist.
    """
    if len(losses) < 2 * window:
        return False
    previous = float(np.mean(losses[-2 * window : -window]))
    last = float(np.mean(losses[-window:]))
    return previous - last < tolerance * abs(previous)


def fit_probe(
    probe: nn.Module,
    features: Sequence[Sequence[torch.Tensor]],
    targets: Sequence[torch.Tensor],
    loss_fn: Any,
    settings: ProbeSettings = ProbeSettings(),
) -> ProbeFit:
    """Fit ``probe`` on precomputed (frozen) features until the loss plateaus (after ``min_steps``) or the budget
    runs out.

    Args:
        probe: maps one feature pyramid (a list of ``(B, C_k, *S_k)`` tensors) to region logits.
        features: one pyramid per training patch (batch dimension 1), computed without gradients.
        targets: the region masks of each patch at the probe's output resolution, ``(1, R, *S)``.
        loss_fn: ``loss_fn(logits, targets)`` (e.g. :meth:`BratsSegmentationTask.loss`).
        settings: budget, plateau rule, optimiser.

    Returns:
        The losses and whether the fit plateaued; ``probe`` is trained in place and left in eval mode.

    Raises:
        ValueError: no patches, or ``features`` and ``targets`` of different lengths.
    """
    if not features or len(features) != len(targets):
        raise ValueError(f"probe: {len(features)} feature pyramids for {len(targets)} targets")
    generator = torch.Generator().manual_seed(settings.seed)
    optimizer = torch.optim.Adam(probe.parameters(), lr=settings.learning_rate)
    probe.train()
    losses: list[float] = []
    order = torch.randperm(len(features), generator=generator).tolist()
    position = 0
    plateaued = False
    for _ in range(settings.max_steps):
        batch = []
        for _ in range(min(settings.batch_size, len(features))):
            if position == len(order):
                order, position = torch.randperm(len(features), generator=generator).tolist(), 0
            batch.append(order[position])
            position += 1
        pyramid = [torch.cat([features[i][k] for i in batch]) for k in range(len(features[batch[0]]))]
        target = torch.cat([targets[i] for i in batch])
        loss = loss_fn(probe(pyramid), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if len(losses) >= settings.min_steps and has_plateaued(
            losses, settings.plateau_window, settings.plateau_tolerance
        ):
            plateaued = True
            break
    probe.eval()
    return ProbeFit(losses=losses, steps=len(losses), plateaued=plateaued)


class EncoderProbe(nn.Module):
    """A frozen encoder of one input channel followed by a probe head; logits at the input's resolution.

    Args:
        encoder: maps ``(B, 1, *S)`` to a feature pyramid (e.g. ``MultiEncoderUNet.encoders[i]``).
        head: maps the pyramid to region logits (possibly at a reduced resolution).
        channel: the input channel the encoder reads.
    """

    def __init__(self, encoder: nn.Module, head: nn.Module, channel: int) -> None:
        super().__init__()
        self.encoder, self.head, self.channel = encoder, head, int(channel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.encoder(x[:, self.channel : self.channel + 1]))
        if logits.shape[2:] != x.shape[2:]:
            mode = "trilinear" if x.ndim == 5 else "bilinear"
            logits = nn.functional.interpolate(logits, size=x.shape[2:], mode=mode, align_corners=False)
        return logits


def _tensor(value: Any) -> torch.Tensor:
    return value.as_tensor() if hasattr(value, "as_tensor") else torch.as_tensor(value)


def _dice_row(logits: torch.Tensor, regions: torch.Tensor) -> np.ndarray:
    from brats_cggm.brats.task import modality_dice

    dice = modality_dice(logits.float(), regions.float()).cpu().numpy().astype(np.float64)
    return np.append(dice, dice.mean())


@torch.no_grad()
def _mean_dice(predictor: nn.Module, cases: Sequence[dict], transform: Any, inferer: Any, device: Any) -> np.ndarray:
    """Mean over cases of the Dice (TC, WT, ET, mean) of ``predictor``'s whole-volume predictions."""
    rows = []
    for item in cases:
        data = transform(dict(item))
        image, label = _tensor(data["image"]).unsqueeze(0).to(device), _tensor(data["label"]).unsqueeze(0).to(device)
        rows.append(_dice_row(inferer(image, predictor), label))
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
            (:func:`~brats_cggm.brats.data.discovery.record_split`).
        seed: its seed (the split); None: the recorded one. Runs that record their split need none
            (:func:`~brats_cggm.brats.data.discovery.split_of_run`).
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

    from brats_cggm.brats.data.discovery import discover_dataset, recorded_split, split_of_run
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


def _training_patches(run: LoadedRun, settings: ProbeSettings) -> list[dict]:
    """The probe's training patches: the bundle's random crops of the training cases, drawn once, seeded."""
    from brats_cggm.brats.data.transforms import train_transforms

    transform = train_transforms(patch_size=run.roi_size, num_samples=settings.patches_per_case, **run.options)
    transform.set_random_state(seed=settings.seed)
    patches = []
    for item in run.train_cases:
        drawn = transform(dict(item))
        patches.extend(drawn if isinstance(drawn, list) else [drawn])
    return patches


def probe_encoder(
    run: LoadedRun, modality: str, settings: ProbeSettings, device: Any, patches: Sequence[dict] | None = None
) -> dict[str, Any]:
    """Fit a fresh probe on the frozen encoder of ``modality`` of ``run`` and score it on the validation cases.

    Args:
        run: the loaded run.
        modality: one of the run's modalities.
        settings: the probe's budget and optimiser.
        device: where to compute.
        patches: the training patches (preprocessed, all of the run's channels); drawn when None.

    Returns:
        ``dice`` (TC, WT, ET, mean), ``steps``, ``plateaued``, ``final_loss``.
    """
    from brats_cggm.brats.model import SegmentationAuxHead
    from brats_cggm.brats.task import BratsSegmentationTask

    network, index = run.network, run.modalities.index(modality)
    encoder = network.encoders[index].eval()
    for parameter in encoder.parameters():
        parameter.requires_grad_(False)
    patches = _training_patches(run, settings) if patches is None else patches
    torch.manual_seed(settings.seed)
    head = SegmentationAuxHead(
        network.features, network.out_channels, settings.channels, 2, network.spatial_dims, network.norm, network.act
    ).to(device)
    task = BratsSegmentationTask()
    features, targets = [], []
    with torch.no_grad():
        for patch in patches:
            image = _tensor(patch["image"]).unsqueeze(0).to(device)
            pyramid = [f.detach() for f in encoder(image[:, index : index + 1])]
            features.append(pyramid)
            label = _tensor(patch["label"]).unsqueeze(0).to(device).float()
            targets.append(task.aux_targets(label, head(pyramid)))
    fit = fit_probe(head, features, targets, task.loss, settings)
    from brats_cggm.brats.data.transforms import val_transforms

    dice = _mean_dice(
        EncoderProbe(encoder, head, index), run.val_cases, val_transforms(**run.options), run.inferer, device
    )
    return {
        "dice": dict(zip(REGIONS, dice.tolist())),
        "steps": fit.steps,
        "plateaued": fit.plateaued,
        "final_loss": fit.losses[-1],
    }


def case_lesionwise_dice(
    predicted: torch.Tensor, reference: torch.Tensor, spacing: Sequence[float], convention: str
) -> list[float]:
    """The BraTS lesion-wise Dice of TC, WT and ET of one case.

    The official BraTS evaluator's penalised score (:func:`brats_cggm.brats.metrics.evaluation.challenge_row`, column
    ``lesionwise_penalised_dsc_<region>``): lesions are 26-connected components matched one to one, and every
    unmatched reference or predicted lesion scores 0.

    Args:
        predicted: ``(3, X, Y, Z)`` region masks (TC, WT, ET), values above 0.5 inside.
        reference: the reference's region masks, same shape.
        spacing: voxel size (mm).
        convention: the label convention the regions are turned into labels with.

    Returns:
        The TC, WT and ET scores.
    """
    from brats_cggm.brats.data.labels import regions_to_labels
    from brats_cggm.brats.metrics.evaluation import challenge_row

    row = challenge_row(
        regions_to_labels(predicted.cpu(), convention)[0].numpy(),
        regions_to_labels(reference.cpu(), convention)[0].numpy(),
        spacing,
        convention,
    )
    return [row[f"lesionwise_penalised_dsc_{region.lower()}"] for region in REGIONS[:-1]]


@torch.no_grad()
def lesionwise_dice(run: LoadedRun, device: Any) -> dict[str, float]:
    """The BraTS lesion-wise Dice (:func:`case_lesionwise_dice`) of each region, averaged over the run's validation
    cases.

    Predictions are the sigmoid thresholded at 0.5, as in the validation Dice, on the network's grid (the
    preprocessed volume, with its voxel size).

    Args:
        run: the loaded run.
        device: where the network runs.

    Returns:
        ``TC``, ``WT``, ``ET`` and their ``mean``.
    """
    from brats_cggm.brats.data.transforms import val_transforms

    transform, convention = val_transforms(**run.options), run.options["label_convention"]
    rows = []
    for item in run.val_cases:
        data = transform(dict(item))
        logits = run.inferer(_tensor(data["image"]).unsqueeze(0).to(device), run.network)[0]
        spacing = [float(s) for s in getattr(data["image"], "pixdim", (1.0, 1.0, 1.0))]
        rows.append(case_lesionwise_dice(torch.sigmoid(logits) >= 0.5, _tensor(data["label"]), spacing, convention))
    means = np.mean(rows, axis=0)
    return {**dict(zip(REGIONS, means.tolist())), "mean": float(means.mean())}


def robustness_from_valuation(results: Sequence[dict], modalities: Sequence[str]) -> dict[str, Any]:
    """Missing-modality robustness from :func:`~brats_cggm.brats.analysis.valuation.valuate_cases`'s per-case values.

    Args:
        results: per case, ``values``: subset key → Dice array (TC, WT, ET, mean).
        modalities: the modality names.

    Returns:
        ``subset_dice`` (each of the ``2^M - 1`` non-empty subsets → region → mean Dice over cases),
        ``mean_over_subsets`` (region → mean of those), ``worst_subset`` and ``worst_subset_dice`` (by mean Dice).

    Raises:
        ValueError: no case.
    """
    from brats_cggm.balancing.valuation import all_subsets

    if not results:
        raise ValueError("no case was valuated")
    keys = [subset_key(s) for s in all_subsets(modalities) if s]
    subset_dice = {k: np.mean([np.asarray(r["values"][k], dtype=float) for r in results], axis=0) for k in keys}
    worst = min(keys, key=lambda k: subset_dice[k][-1])
    return {
        "subset_dice": {k: dict(zip(REGIONS, v.tolist())) for k, v in subset_dice.items()},
        "mean_over_subsets": dict(zip(REGIONS, np.mean(list(subset_dice.values()), axis=0).tolist())),
        "worst_subset": worst,
        "worst_subset_dice": float(subset_dice[worst][-1]),
    }


def _unimodal_reference(
    single_dir: Path,
    modality: str,
    dataset_dir: str | Path | None,
    seed: int | None,
    val_fraction: float | None,
    device: Any,
    probe: ProbeSettings,
    weights: str,
    cache: dict | None,
) -> dict[str, Any]:
    """The probe Dice of a unimodal run's encoder and the run's own Dice (``unimodal_probe``,
    ``unimodal_network_dice``), from ``cache`` when measured before with the same settings."""
    from brats_cggm.brats.data.transforms import val_transforms

    key = (str(single_dir.resolve()), modality, str(dataset_dir), seed, val_fraction, weights, probe)
    if cache is not None and key in cache:
        return cache[key]
    single = load_run(single_dir, dataset_dir, seed, val_fraction, device, weights)
    if single.modalities != (modality,):
        raise ValueError(
            f"--unimodal {modality}={single_dir}: that run was trained on {list(single.modalities)}, "
            f"not on [{modality!r}] alone"
        )
    network_dice = _mean_dice(
        single.network.eval(), single.val_cases, val_transforms(**single.options), single.inferer, device
    )
    reference = {
        "unimodal_weights_file": str(single.weights_file),
        "unimodal_probe": probe_encoder(single, modality, probe, device),
        "unimodal_network_dice": dict(zip(REGIONS, network_dice.tolist())),
    }
    if cache is not None:
        cache[key] = reference
    return reference


def diagnose_run(
    run_dir: str | Path,
    dataset_dir: str | Path | None = None,
    unimodal: Mapping[str, str | Path] | None = None,
    seed: int | None = None,
    val_fraction: float | None = None,
    device: str | torch.device = "cpu",
    probe: ProbeSettings = ProbeSettings(),
    shapley: bool = True,
    weights: str = "best",
    reference_cache: dict | None = None,
    lesionwise: bool = True,
) -> dict[str, Any]:
    """Every diagnostic of one multimodal run.

    Args:
        run_dir: the run's ``output_dir`` (``configs/inference.json`` and ``models/model.pt`` or
            ``models/checkpoint.pt``).
        dataset_dir: the data set it trained on; None: the one the run recorded.
        unimodal: modality → the ``output_dir`` of a run of the same bundle on that modality alone, same seed.
            The gap is computed for these modalities only.
        seed: the run's seed (it chose the training and validation cases); None: the recorded one
            (:func:`load_run`).
        val_fraction: the run's validation share; None: the recorded one.
        device: where to compute.
        probe: the probe's settings, the same for every encoder.
        shapley: also valuate the run (robustness and Shapley values).
        weights: which of each run's networks (:data:`WEIGHTS`); the unimodal runs' too.
        reference_cache: a dict kept between calls: a unimodal run's probe and Dice, which do not depend on the
            multimodal run, are then measured once (a comparison diagnoses many runs against the same ones).
        lesionwise: also score the run lesion-wise (a caller that has already done so passes False).

    Returns:
        ``run_dir``, ``seed``, ``weights``, ``weights_file`` (the file used), ``modalities``, ``encoder_gap``
        (modality → probe and unimodal Dice, the unimodal run's ``unimodal_weights_file``, ``gap``,
        ``gap_vs_network``), with ``lesionwise`` ``lesionwise_dice`` (:func:`lesionwise_dice`), and with ``shapley``
        ``robustness`` (:func:`robustness_from_valuation`) and ``shapley`` (modality → region → mean contribution).

    Raises:
        FileNotFoundError: a run folder is missing, or ``weights`` is ``"best"`` and a run saved no best network.
        ValueError: a unimodal run is not trained on exactly its modality, or a modality is not the run's.
    """
    from brats_cggm.brats.analysis.valuation import summarize, valuate_cases
    from brats_cggm.brats.data.discovery import recorded_split
    from brats_cggm.brats.data.transforms import val_transforms

    device = torch.device(device)
    run_dir = Path(run_dir)
    run = load_run(run_dir, dataset_dir, seed, val_fraction, device, weights)
    report: dict[str, Any] = {
        "run_dir": str(run_dir),
        "seed": seed if seed is not None else recorded_split(run_dir)["seed"],
        "weights": weights,
        "weights_file": str(run.weights_file),
        "modalities": list(run.modalities),
    }
    if lesionwise:
        report["lesionwise_dice"] = lesionwise_dice(run, device)
    if unimodal:
        unknown = sorted(set(unimodal) - set(run.modalities))
        if unknown:
            raise ValueError(f"--unimodal {unknown[0]}: not a modality of {run_dir} ({', '.join(run.modalities)})")
        patches = _training_patches(run, probe)
        gaps = {}
        for modality, single_dir in unimodal.items():
            reference = _unimodal_reference(
                Path(single_dir), modality, dataset_dir, seed, val_fraction, device, probe, weights, reference_cache
            )
            multimodal_probe = probe_encoder(run, modality, probe, device, patches)
            gaps[modality] = {
                "unimodal_run": str(single_dir),
                "multimodal_probe": multimodal_probe,
                **reference,
                "gap": reference["unimodal_probe"]["dice"]["mean"] - multimodal_probe["dice"]["mean"],
                "gap_vs_network": reference["unimodal_network_dice"]["mean"] - multimodal_probe["dice"]["mean"],
            }
            logger.info(f"{run_dir} {modality}: gap {gaps[modality]['gap']:+.3f}")
        report["encoder_gap"] = gaps
    if shapley:
        results = valuate_cases(
            run.network, run.val_cases, val_transforms(**run.options), run.inferer, device, run.modalities
        )
        report["robustness"] = robustness_from_valuation(results, run.modalities)
        report["shapley"] = summarize(results, run.modalities)["shapley"]
    report["probe_settings"] = asdict(probe)
    return report


def _mean_std(values: Sequence[float]) -> dict[str, float]:
    array = np.asarray(values, dtype=float)
    return {"mean": float(array.mean()), "std": float(array.std(ddof=1)) if len(array) > 1 else 0.0, "n": len(array)}


def summarize_diagnoses(reports: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean ± standard deviation over runs (seeds) of each diagnostic's mean-Dice numbers.

    Args:
        reports: :func:`diagnose_run`'s reports, one per run.

    Returns:
        ``modalities``; ``lesionwise_dice``: region → stats; ``encoder_gap``: modality → quantity
        (``multimodal_probe``, ``unimodal_probe``, ``unimodal_network``, ``gap``, ``gap_vs_network``) →
        ``{mean, std, n}``; ``shapley``: modality → stats of the mean-Dice contribution; ``subset_dice``: subset →
        stats; ``mean_over_subsets`` and ``worst_subset_dice``: stats; ``worst_subsets``: each run's worst subset.
        Sections no run has are absent. The standard deviation is the sample one (``ddof=1``), 0 for one run.

    Raises:
        ValueError: no report.
    """
    if not reports:
        raise ValueError("no run to summarize")
    modalities = reports[0]["modalities"]
    summary: dict[str, Any] = {"modalities": modalities, "runs": [r["run_dir"] for r in reports]}
    lesionwise = [r["lesionwise_dice"] for r in reports if "lesionwise_dice" in r]
    if lesionwise:
        summary["lesionwise_dice"] = {region: _mean_std([run[region] for run in lesionwise]) for region in REGIONS}
    gap_runs = [r["encoder_gap"] for r in reports if r.get("encoder_gap")]
    if gap_runs:
        quantities = {
            "multimodal_probe": lambda g: g["multimodal_probe"]["dice"]["mean"],
            "unimodal_probe": lambda g: g["unimodal_probe"]["dice"]["mean"],
            "unimodal_network": lambda g: g["unimodal_network_dice"]["mean"],
            "gap": lambda g: g["gap"],
            "gap_vs_network": lambda g: g["gap_vs_network"],
        }
        summary["encoder_gap"] = {
            m: {name: _mean_std([get(run[m]) for run in gap_runs if m in run]) for name, get in quantities.items()}
            for m in modalities
            if any(m in run for run in gap_runs)
        }
    valued = [r for r in reports if "robustness" in r]
    if valued:
        summary["shapley"] = {m: _mean_std([r["shapley"][m]["mean"] for r in valued]) for m in modalities}
        subsets = list(valued[0]["robustness"]["subset_dice"])
        summary["subset_dice"] = {
            s: _mean_std([r["robustness"]["subset_dice"][s]["mean"] for r in valued]) for s in subsets
        }
        summary["mean_over_subsets"] = _mean_std([r["robustness"]["mean_over_subsets"]["mean"] for r in valued])
        summary["worst_subset_dice"] = _mean_std([r["robustness"]["worst_subset_dice"] for r in valued])
        summary["worst_subsets"] = [r["robustness"]["worst_subset"] for r in valued]
    return summary


def _cell(stats: Mapping[str, float], signed: bool = False) -> str:
    return f"{stats['mean']:{'+' if signed else ''}.3f} ± {stats['std']:.3f}"


def _networks(reports: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per network diagnosed: the run, which of its networks and the file it came from."""
    lines = []
    for report in reports:
        lines.append(f"- `{report['run_dir']}`: {report['weights']} (`{report.get('weights_file', '?')}`)")
        for modality, gap in report.get("encoder_gap", {}).items():
            file = gap.get("unimodal_weights_file", "?")
            lines.append(f"  - unimodal {modality}: `{gap['unimodal_run']}` (`{file}`)")
    return lines


def diagnostics_markdown(summary: Mapping[str, Any], reports: Sequence[Mapping[str, Any]], plots: bool = True) -> str:
    """``diagnostics.md``: the encoder gap, the Shapley shares and the subset Dice tables, with the plots if
    ``plots``."""
    runs = len(summary["runs"])
    text = [f"# Imbalance diagnostics\n\n{runs} run(s); mean ± std over runs (sample std; 0 for one run).\n"]
    text += ["Networks diagnosed:\n", *_networks(reports), ""]
    if "lesionwise_dice" in summary:
        text += [
            "## Lesion-wise Dice\n",
            "The official BraTS evaluator's lesion-wise Dice on the validation cases (an unmatched lesion counts 0).\n",
            "| " + " | ".join(REGIONS) + " |",
            "|" + "---:|" * len(REGIONS),
            "| " + " | ".join(_cell(summary["lesionwise_dice"][region]) for region in REGIONS) + " |\n",
        ]
    if "encoder_gap" in summary:
        settings = reports[0]["probe_settings"]
        text += [
            "## Under-optimisation gap per modality\n",
            "Mean Dice on the validation cases of a probe (an auxiliary-head-shaped head) fitted on each frozen "
            f"encoder (at most {settings['max_steps']} Adam steps at lr {settings['learning_rate']}, stopped after "
            f"at least {settings['min_steps']} once a {settings['plateau_window']}-step window's mean loss improved "
            f"by less than {settings['plateau_tolerance']:.0%}; `plateaued` in diagnostics.json). "
            "gap = unimodal probe − multimodal probe; gap vs network = the unimodal network's own Dice − "
            "multimodal probe.\n",
            "| modality | multimodal probe | unimodal probe | unimodal network | gap | gap vs network |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for m, row in summary["encoder_gap"].items():
            cells = [_cell(row[q]) for q in ("multimodal_probe", "unimodal_probe", "unimodal_network")]
            cells += [_cell(row["gap"], True), _cell(row["gap_vs_network"], True)]
            text.append(f"| {m} | " + " | ".join(cells) + " |")
        text.append("\n![encoder gap](encoder_gap.png)\n" if plots else "")
    if "shapley" in summary:
        text += [
            "## Shapley shares\n",
            "Each modality's Shapley contribution to the mean Dice (inputs of absent modalities zeroed).\n",
            "| modality | φ mean Dice |",
            "|---|---:|",
            *[f"| {m} | {_cell(s, True)} |" for m, s in summary["shapley"].items()],
            "\n![Shapley](shapley.png)\n" if plots else "",
            "## Missing-modality robustness\n",
            f"Mean Dice over the 15 non-empty subsets: {_cell(summary['mean_over_subsets'])}; worst subset: "
            f"{_cell(summary['worst_subset_dice'])} ({', '.join(summary['worst_subsets'])}).\n",
            "| subset | mean Dice |",
            "|---|---:|",
            *[f"| {s} | {_cell(v)} |" for s, v in summary["subset_dice"].items()],
            "\n![subset Dice](subset_dice.png)\n" if plots else "",
        ]
    return "\n".join(text)


def _plots(summary: Mapping[str, Any], out_dir: Path) -> list[Path]:
    plt = import_pyplot("the diagnostics plots")
    written = []
    if "encoder_gap" in summary:
        gap = summary["encoder_gap"]
        quantities = ("multimodal_probe", "unimodal_probe", "unimodal_network")
        figure, axis = plt.subplots(figsize=(7, 3.5))
        width = 0.8 / len(quantities)
        for j, q in enumerate(quantities):
            x = np.arange(len(gap)) + (j - 1) * width
            axis.bar(x, [gap[m][q]["mean"] for m in gap], width, yerr=[gap[m][q]["std"] for m in gap], label=q)
        axis.set_xticks(np.arange(len(gap)), list(gap))
        axis.set_ylabel("validation mean Dice")
        axis.legend(fontsize=8)
        written.append(save_png(figure, out_dir / "encoder_gap.png"))
        plt.close(figure)
    if "shapley" in summary:
        shapley = summary["shapley"]
        figure, axis = plt.subplots(figsize=(5, 3.5))
        axis.bar(list(shapley), [s["mean"] for s in shapley.values()], yerr=[s["std"] for s in shapley.values()])
        axis.set_ylabel("Shapley contribution to mean Dice")
        written.append(save_png(figure, out_dir / "shapley.png"))
        plt.close(figure)
        subsets = summary["subset_dice"]
        values = np.array([[v["mean"] for v in subsets.values()]]).T
        figure, axis = plt.subplots(figsize=(4, 0.35 * len(subsets) + 1))
        image = axis.imshow(values, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        axis.set_yticks(np.arange(len(subsets)), list(subsets))
        axis.set_xticks([0], ["mean Dice"])
        for i, value in enumerate(values[:, 0]):
            axis.text(0, i, f"{value:.2f}", ha="center", va="center", color="w" if value < 0.5 else "k", fontsize=8)
        figure.colorbar(image, ax=axis)
        written.append(save_png(figure, out_dir / "subset_dice.png"))
        plt.close(figure)
    return written


def write_diagnostics_report(
    reports: Sequence[dict[str, Any]], out_dir: str | Path, overwrite: bool = False, plots: bool = True
) -> list[Path]:
    """Write ``diagnostics.json`` (the runs' reports and their summary), ``diagnostics.md`` and the plots.

    Args:
        reports: :func:`diagnose_run`'s reports.
        out_dir: the report folder (created).
        overwrite: replace the files of an earlier report.
        plots: draw the plots (needs matplotlib).

    Returns:
        The files written.

    Raises:
        FileExistsError: a report file exists and ``overwrite`` is False (nothing is written).
        NotADirectoryError: ``out_dir`` is a file.
        ImportError: ``plots`` without matplotlib (checked before anything is written).
    """
    from brats_cggm.core.files import atomic_write_text, to_jsonable

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"--output-dir {out_dir} is a file, not a folder")
    existing = [out_dir / name for name in DIAGNOSTICS_FILES if (out_dir / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{existing[0]} exists; pass --overwrite to replace the report")
    if plots:
        import_pyplot("the diagnostics plots")
    summary = summarize_diagnoses(reports)
    document = to_jsonable({"summary": summary, "runs": list(reports)})
    written = [
        atomic_write_text(out_dir / "diagnostics.json", json.dumps(document, indent=2) + "\n"),
        atomic_write_text(out_dir / "diagnostics.md", diagnostics_markdown(summary, reports, plots)),
    ]
    if plots:
        written += _plots(summary, out_dir)
    return written
