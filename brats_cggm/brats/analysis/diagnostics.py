"""Imbalance diagnostics of a trained BraTS run: under-optimised encoders, missing-modality robustness, Shapley.

``brats-cggm-diagnose RUN_DIR [--unimodal M=RUN_DIR ...] --dataset-dir DIR --output-dir OUT``
(:mod:`brats_cggm.cli.diagnose`)

- **Under-optimisation gap of each modality's encoder.** Modality imbalance leaves the weaker modalities' encoders
  under-trained: a multimodal network's encoder for modality ``m`` has learnt less than the same encoder trained
  on ``m`` alone (Du et al., "On uni-modal feature learning in supervised multi-modal learning", ICML 2023;
  Wang, Tran and Feiszli, "What makes training multi-modal classification networks hard?", CVPR 2020). It is
  measured by *probing*: a fresh head shaped like the run's auxiliary heads
  (:class:`~brats_cggm.brats.model.SegmentationAuxHead`) is fitted on the **frozen** encoder's features of the run's
  training cases (:func:`.probes.fit_probe`: a fixed budget of steps chosen in advance, stopped early once the training
  loss plateaus), then scored by Dice on the validation cases. The same probe is fitted on the encoder of a run
  trained on ``m`` alone (the bundle with ``modalities: [m]``), so

      gap(m) = probe Dice(unimodal encoder) − probe Dice(multimodal encoder)

  compares encoders only (the probe is the same on both sides); ``gap_vs_network(m)`` = the unimodal network's
  own Dice − probe Dice(multimodal encoder) is reported too. A positive gap: the multimodal training left the
  encoder of ``m`` behind what ``m`` alone supports. The probe reads one encoder's features of its own channel
  only, so the other modalities' absence does not enter it and ``absent`` does not change it (:mod:`.probes`).
- **Missing-modality robustness.** The Dice of each of the 15 non-empty modality subsets, the others absent
  (:func:`brats_cggm.brats.analysis.valuation.valuate_cases`, which also gives the Shapley values), their mean
  and the worst subset. ``absent`` (:data:`~brats_cggm.brats.analysis.absence.ABSENCE_MODES`) says what
  absent means: ``"mask"`` (default), the network's availability mask (the absent encoders do not run, the
  fusion rescales the present ones), or ``"zero-input"``, the absent inputs zeroed (the figures before 0.2);
  every report records it (``absent``) and :func:`summarize_diagnoses` refuses to mix the two.
- **Shapley shares** of each modality in the mean Dice (:mod:`brats_cggm.core.shapley`).
- **Lesion-wise Dice** of each region (:func:`.lesionwise.lesionwise_dice`), the official BraTS evaluator's score,
  which counts every missed or spurious lesion as 0 where the global Dice hardly sees a small one.

A run has two saved networks: the best validation's (``models/model.pt``) and the last epoch's (inside
``models/checkpoint.pt``); ``weights`` chooses (:func:`.runs.run_weights`), and a run that saved no best network is
refused under ``"best"`` rather than diagnosed with another. Every report names the file it used
(``weights_file``). ``brats-cggm-compare`` asks for ``"last"``, whose Dice its comparison reports, so it never
needs ``models/model.pt``.

With several runs (seeds), every number is reported as mean ± standard deviation over the runs
(:func:`summarize_diagnoses`). :func:`.diagnostics_report.write_diagnostics_report`
writes ``diagnostics.json``, ``diagnostics.md`` and
plots (matplotlib, the ``plots`` extra).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from brats_cggm.brats.analysis.absence import ABSENCE_DEFINITIONS, absence_of, check_absence
from brats_cggm.brats.analysis.lesionwise import lesionwise_dice
from brats_cggm.brats.analysis.probes import ProbeSettings, probe_encoder, training_patches
from brats_cggm.brats.analysis.runs import REGIONS, load_run, mean_dice
from brats_cggm.core.shapley import subset_key
from brats_cggm.core.stats import mean_std

__all__ = [
    "diagnose_run",
    "robustness_from_valuation",
    "summarize_diagnoses",
]

logger = logging.getLogger(__name__)


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
    from brats_cggm.core.shapley import all_subsets

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
    network_dice = mean_dice(
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
    probe: ProbeSettings | None = None,
    shapley: bool = True,
    weights: str = "best",
    reference_cache: dict | None = None,
    lesionwise: bool = True,
    absent: str = "mask",
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
        probe: the probe's settings, the same for every encoder; None: the defaults.
        shapley: also valuate the run (robustness and Shapley values).
        weights: which of each run's networks (:data:`WEIGHTS`); the unimodal runs' too.
        reference_cache: a dict kept between calls: a unimodal run's probe and Dice, which do not depend on the
            multimodal run, are then measured once (a comparison diagnoses many runs against the same ones).
        lesionwise: also score the run lesion-wise (a caller that has already done so passes False).
        absent: the definition of an absent modality in the valuation
            (:data:`~brats_cggm.brats.analysis.absence.ABSENCE_MODES`); the encoder gap does not depend on it.

    Returns:
        ``run_dir``, ``seed``, ``weights``, ``weights_file`` (the file used), ``modalities``, ``encoder_gap``
        (modality → probe and unimodal Dice, the unimodal run's ``unimodal_weights_file``, ``gap``,
        ``gap_vs_network``); with ``lesionwise``, ``lesionwise_dice`` (:func:`.lesionwise.lesionwise_dice`); with
        ``shapley``, ``absent`` (the definition used), ``robustness`` (:func:`robustness_from_valuation`) and
        ``shapley`` (modality → region → mean contribution).

    Raises:
        FileNotFoundError: a run folder is missing, or ``weights`` is ``"best"`` and a run saved no best network.
        ValueError: a unimodal run is not trained on exactly its modality, a modality is not the run's, or an
            unknown ``absent``.
    """
    from brats_cggm.brats.analysis.valuation import summarize, valuate_cases
    from brats_cggm.brats.data.splits import recorded_split
    from brats_cggm.brats.data.transforms import val_transforms

    check_absence(absent)
    device = torch.device(device)
    probe = ProbeSettings() if probe is None else probe
    run_dir = Path(run_dir)
    run = load_run(run_dir, dataset_dir, seed, val_fraction, device, weights)
    report: dict[str, Any] = {
        "run_dir": str(run_dir),
        "seed": seed if seed is not None else (recorded_split(run_dir) or {}).get("seed"),
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
        patches = training_patches(run, probe)
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
            run.network, run.val_cases, val_transforms(**run.options), run.inferer, device, run.modalities, absent
        )
        report["absent"] = absent
        report["robustness"] = robustness_from_valuation(results, run.modalities)
        report["shapley"] = summarize(results, run.modalities)["shapley"]
    report["probe_settings"] = asdict(probe)
    return report


def summarize_diagnoses(reports: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean ± standard deviation over runs (seeds) of each diagnostic's mean-Dice numbers.

    Args:
        reports: :func:`diagnose_run`'s reports, one per run.

    Returns:
        ``modalities``; ``lesionwise_dice``: region → stats; ``encoder_gap``: modality → quantity
        (``multimodal_probe``, ``unimodal_probe``, ``unimodal_network``, ``gap``, ``gap_vs_network``) →
        ``{mean, std, n}``; ``shapley``: modality → stats of the mean-Dice contribution; ``subset_dice``: subset →
        stats; ``mean_over_subsets`` and ``worst_subset_dice``: stats; ``worst_subsets``: each run's worst subset;
        ``absent`` and ``absent_definition``: the definition of an absent modality of those numbers (a report
        without one is :data:`~brats_cggm.brats.analysis.absence.LEGACY_ABSENCE`).
        Sections no run has are absent. The standard deviation is the sample one (``ddof=1``), None for one run
        (:func:`~brats_cggm.core.stats.mean_std`).

    Raises:
        ValueError: no report, or the reports' valuations use different definitions of an absent modality.
    """
    if not reports:
        raise ValueError("no run to summarize")
    modalities = reports[0]["modalities"]
    summary: dict[str, Any] = {"modalities": modalities, "runs": [r["run_dir"] for r in reports]}
    lesionwise = [r["lesionwise_dice"] for r in reports if "lesionwise_dice" in r]
    if lesionwise:
        summary["lesionwise_dice"] = {region: mean_std([run[region] for run in lesionwise]) for region in REGIONS}
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
            m: {name: mean_std([get(run[m]) for run in gap_runs if m in run]) for name, get in quantities.items()}
            for m in modalities
            if any(m in run for run in gap_runs)
        }
    valued = [r for r in reports if "robustness" in r]
    if valued:
        summary["absent"] = absence_of(valued)
        summary["absent_definition"] = ABSENCE_DEFINITIONS[summary["absent"]]
        summary["shapley"] = {m: mean_std([r["shapley"][m]["mean"] for r in valued]) for m in modalities}
        subsets = list(valued[0]["robustness"]["subset_dice"])
        summary["subset_dice"] = {
            s: mean_std([r["robustness"]["subset_dice"][s]["mean"] for r in valued]) for s in subsets
        }
        summary["mean_over_subsets"] = mean_std([r["robustness"]["mean_over_subsets"]["mean"] for r in valued])
        summary["worst_subset_dice"] = mean_std([r["robustness"]["worst_subset_dice"] for r in valued])
        summary["worst_subsets"] = [r["robustness"]["worst_subset"] for r in valued]
    return summary
