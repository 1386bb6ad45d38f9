"""Choosing a run's post-processing thresholds on its validation cases (the API of ``brats-cggm-fit-postprocessing``).

:func:`fit_postprocessing` segments the validation cases of a training run (the split the run recorded, or
:func:`~brats_cggm.brats.data.splits.split_datalist` of the data set with the run's ``seed`` and ``val_fraction``, as
``train.yaml`` splits it: :func:`~brats_cggm.brats.data.splits.split_of_run`), then
:func:`~brats_cggm.brats.inference.postprocessing.choose_postprocessing` tries, on top of the rules kept so far
and in this order, the least component size of WT, TC and ET and the least total enhancing-tumour size, each at
every size of a grid fixed in advance, :data:`SIZE_GRID_MM3` (mm³), and keeps a rule only if its best size
raises the mean of the chosen metric over the cases (nnU-Net's rule). The metrics
(:data:`FIT_METRICS`):

- ``lesionwise_dice``: per case, the mean over ET, TC and WT of the lesion-wise Dice that counts every unmatched
  reference or predicted lesion as 0 (:func:`~brats_cggm.brats.metrics.lesion.penalised_lesionwise_scores`); a
  region without reference lesion scores 1 without predicted lesion, else 0 (the BraTS 2023 lesion-wise rule);
- ``global_dice``: per case, the mean over ET, TC and WT of the global Dice (a region empty on both sides: 1).

:func:`write_postprocessing_fit` writes the thresholds into the run's ``configs/inference.json`` (its
``postprocessing_rules`` entry, see :mod:`brats_cggm.brats.inference.postprocessing_rules`) and the tables next to it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from brats_cggm.brats.data.nifti_checks import load_nifti
from brats_cggm.brats.inference.postprocessing import POSTPROCESS_REGIONS, choose_postprocessing, mean_region_dice
from brats_cggm.brats.inference.postprocessing_rules import RULES_KEY, PostprocessingRules
from brats_cggm.brats.metrics.case_scores import challenge_row
from brats_cggm.brats.metrics.lesion import case_challenge_metrics, penalised_lesionwise_scores
from brats_cggm.core.files import refuse_existing
from brats_cggm.core.tables import markdown_table

__all__ = [
    "FIT_METRICS",
    "FIT_TABLE",
    "SIZE_GRID_MM3",
    "PostprocessingFit",
    "case_score",
    "check_fit_targets",
    "fit_markdown",
    "fit_postprocessing",
    "write_postprocessing_fit",
]

#: The sizes (mm³) tried for every rule: component sizes of WT, TC, ET and the total enhancing-tumour size.
SIZE_GRID_MM3: tuple[float, ...] = (10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0)

#: The metrics a fit may maximise.
FIT_METRICS: tuple[str, ...] = ("lesionwise_dice", "global_dice")

#: The tables of a fit, next to the run's inference config.
FIT_TABLE = "configs/postprocessing.md"

_RUN_CONFIG = "configs/inference.json"
_SCORED_REGIONS = ("et", "tc", "wt")
_TABLE_STEMS = (
    ("global Dice", "global_dsc"),
    ("global HD95 (mm)", "global_hd95"),
    ("lesion-wise Dice", "lesionwise_penalised_dsc"),
    ("lesion-wise HD95 (mm)", "lesionwise_penalised_hd95"),
)


def _lesionwise_dice(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float], convention: str) -> float:
    result = case_challenge_metrics(pred, ref, spacing, convention, regions=_SCORED_REGIONS)
    scores = []
    for region in _SCORED_REGIONS:
        value = penalised_lesionwise_scores(result[region])["dsc"]
        if math.isnan(value):  # no reference lesion: a false positive is a miss
            value = 1.0 if result[region]["n_pred_instances"] == 0 else 0.0
        scores.append(value)
    return float(np.mean(scores))


def case_score(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float], convention: str, metric: str) -> float:
    """One case's score under a fit metric (see the module docstring).

    Args:
        pred: predicted label map.
        ref: reference label map, same shape and convention.
        spacing: voxel size (mm).
        convention: the label convention of both.
        metric: one of :data:`FIT_METRICS`.

    Returns:
        The score, higher is better.

    Raises:
        ValueError: if the metric is unknown.
    """
    if metric == "lesionwise_dice":
        return _lesionwise_dice(pred, ref, spacing, convention)
    if metric == "global_dice":
        return mean_region_dice(pred, ref, convention)
    raise ValueError(f"metric must be one of {FIT_METRICS}, got {metric!r}")


@dataclass
class PostprocessingFit:
    """What :func:`fit_postprocessing` chose, and on what.

    Attributes:
        rules: the kept thresholds (no rule at all when none helps).
        metric: the maximised metric.
        case_ids: the validation cases.
        trials: every tried rule and size: ``rule``, ``threshold``, ``score_before``, ``score_after``, ``kept``.
        before: mean per column of :func:`~brats_cggm.brats.metrics.case_scores.challenge_row` without post-processing.
        after: the same with the kept rules.
        source: the data set, seed and validation share the cases come from.
    """

    rules: PostprocessingRules
    metric: str
    case_ids: list[str]
    trials: list[dict[str, Any]] = field(default_factory=list)
    before: dict[str, float] = field(default_factory=dict)
    after: dict[str, float] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)


def _mean_rows(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    out = {}
    for key in rows[0]:
        values = np.asarray([r[key] for r in rows], dtype=np.float64)
        values = values[~np.isnan(values)]
        out[key] = float(values.mean()) if values.size else math.nan
    return out


def _segment_validation_cases(
    run_dir: Path,
    dataset_dir: str | os.PathLike,
    seed: int | None,
    val_fraction: float | None,
    device: str,
    checkpoint: Any,
) -> tuple[list[tuple[str, np.ndarray, np.ndarray, tuple[float, ...]]], str]:
    from brats_cggm.brats.data.discovery import discover_dataset
    from brats_cggm.brats.data.splits import split_of_run
    from brats_cggm.brats.inference.case_io import CaseInput
    from brats_cggm.brats.inference.model_loading import load_model
    from brats_cggm.brats.inference.segmenter import BratsSegmenter

    network, settings = load_model(run_dir, checkpoint, device=device)
    spec = discover_dataset(dataset_dir, settings.modalities)
    validation = split_of_run(run_dir, spec.items, seed, val_fraction)[1]
    segmenter = BratsSegmenter(network, settings, device=device)
    cases = []
    for item in validation:
        image = item["image"]
        case = CaseInput(str(item["case_id"]), image, spec.channel_order if isinstance(image, str) else None)
        images = segmenter.check(case)
        pred = segmenter(case, spec.label_convention, images=images)["labels"]
        ref_image = load_nifti(item["label"])
        ref = np.asarray(ref_image.dataobj).astype(np.int16)
        spacing = tuple(float(z) for z in ref_image.header.get_zooms()[:3])
        cases.append((case.case_id, pred, ref, spacing))
    return cases, spec.label_convention


def fit_postprocessing(
    run_dir: str | os.PathLike,
    dataset_dir: str | os.PathLike | None = None,
    seed: int | None = None,
    val_fraction: float | None = None,
    metric: str = "lesionwise_dice",
    device: str = "cpu",
    checkpoint: str | os.PathLike | None = None,
    grid: Sequence[float] = SIZE_GRID_MM3,
) -> PostprocessingFit:
    """Choose post-processing thresholds for a training run on its validation cases (see the module docstring).

    Args:
        run_dir: the run's ``output_dir`` (its ``configs/inference.json`` and ``models/model.pt``).
        dataset_dir: the data set the run trained on; None: the one it recorded
            (:func:`~brats_cggm.brats.data.splits.record_split`).
        seed: the run's ``seed`` (it chose the validation cases); None: the recorded one.
        val_fraction: the run's ``val_fraction``; None: the recorded one.
        metric: one of :data:`FIT_METRICS`.
        device: where the network runs.
        checkpoint: weights instead of ``run_dir/models/model.pt``.
        grid: sizes (mm³) tried for every rule.

    Returns:
        The fit.

    Raises:
        ValueError: if the metric is unknown or the run or data set cannot be read.
        FileNotFoundError: if a file or folder is missing.
    """
    from brats_cggm.brats.data.splits import recorded_split

    if metric not in FIT_METRICS:
        raise ValueError(f"metric must be one of {FIT_METRICS}, got {metric!r}")
    record = recorded_split(run_dir)
    if record is not None:
        dataset_dir = record["dataset_dir"] if dataset_dir is None else dataset_dir
        seed = record["seed"] if seed is None else seed
        val_fraction = record["val_fraction"] if val_fraction is None else val_fraction
    elif dataset_dir is None:
        raise ValueError(f"{run_dir} records no data set (configs/split.json): give the one it trained on")
    cases, convention = _segment_validation_cases(Path(run_dir), dataset_dir, seed, val_fraction, device, checkpoint)
    choice = choose_postprocessing(
        [(pred, ref, spacing) for _, pred, ref, spacing in cases],
        convention,
        component_sizes={r: list(grid) for r in POSTPROCESS_REGIONS},
        enhancing_sizes=list(grid),
        unit="mm3",
        # lesion Dice and matching do not depend on the voxel spacing
        score=None if metric == "global_dice" else lambda p, r: _lesionwise_dice(p, r, (1.0,) * 3, convention),
    )
    rules = PostprocessingRules(choice.min_component_size, choice.min_enhancing_size, "mm3")
    before, after = [], []
    for _, pred, ref, spacing in cases:
        before.append(challenge_row(pred, ref, spacing, convention))
        after.append(challenge_row(rules.apply(pred, convention, spacing), ref, spacing, convention))
    return PostprocessingFit(
        rules=rules,
        metric=metric,
        case_ids=[c for c, *_ in cases],
        trials=choice.table,
        before=_mean_rows(before),
        after=_mean_rows(after),
        source={"dataset_dir": str(dataset_dir), "seed": seed, "val_fraction": val_fraction},
    )


def fit_markdown(fit: PostprocessingFit) -> str:
    """The fit as markdown: what was chosen, the before/after table of ET, TC, WT, every tried rule.

    Args:
        fit: a result of :func:`fit_postprocessing`.

    Returns:
        The text.
    """
    chosen = json.dumps(fit.rules.to_config()) if fit.rules.active else "no rule improves the metric: none kept"
    lines = [
        f"Post-processing chosen on {len(fit.case_ids)} validation case(s) ({', '.join(fit.case_ids)}) of "
        f"{fit.source.get('dataset_dir')} (seed {fit.source.get('seed')}, val_fraction "
        f"{fit.source.get('val_fraction')}), maximising the mean {fit.metric}: {chosen}.",
        "",
        "Means over the cases, before -> after (lesion-wise: unmatched lesions count as Dice 0, HD95 373 mm; "
        "a region without reference lesion is left out):",
        "",
    ]
    rows = [
        [title, *(f"{fit.before[f'{stem}_{r}']:.4f} -> {fit.after[f'{stem}_{r}']:.4f}" for r in _SCORED_REGIONS)]
        for title, stem in _TABLE_STEMS
    ]
    lines.append(markdown_table(["metric", *(r.upper() for r in _SCORED_REGIONS)], rows))
    lines += ["", "Tried (each on top of the rules kept before it; sizes in mm³):", ""]
    tried = [
        [
            t["rule"],
            f"{t['threshold']:g}",
            f"{t['score_before']:.4f}",
            f"{t['score_after']:.4f}",
            "yes" if t["kept"] else "",
        ]
        for t in fit.trials
    ]
    lines.append(markdown_table(["rule", "size", "score before", "score after", "kept"], tried))
    return "\n".join(lines) + "\n"


def check_fit_targets(run_dir: str | os.PathLike, overwrite: bool = False) -> tuple[Path, Path]:
    """The run config and table a fit would write, checked before any work.

    Args:
        run_dir: the run's ``output_dir``.
        overwrite: allow replacing an existing ``postprocessing_rules`` entry and table.

    Returns:
        ``(RUN_DIR/configs/inference.json, RUN_DIR/configs/postprocessing.md)``.

    Raises:
        FileNotFoundError: if the run config is missing.
        ValueError: if it is not a JSON object.
        FileExistsError: if it has a ``postprocessing_rules`` entry, or the table exists, and ``overwrite`` is False.
    """
    config_path, table_path = Path(run_dir) / _RUN_CONFIG, Path(run_dir) / FIT_TABLE
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path}: no run config (train with bundles/brats_cggm/configs/train.yaml)")
    try:
        config = json.loads(config_path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{config_path}: not JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise ValueError(f"{config_path}: not a JSON object")
    if not overwrite and RULES_KEY in config:
        raise FileExistsError(f"{config_path}: has a {RULES_KEY} entry already; pass --overwrite to replace it")
    refuse_existing([table_path], overwrite)
    return config_path, table_path


def write_postprocessing_fit(
    run_dir: str | os.PathLike, fit: PostprocessingFit, overwrite: bool = False
) -> tuple[Path, Path]:
    """Write the fit's thresholds into the run's inference config and its tables next to it, each atomically.

    Args:
        run_dir: the run's ``output_dir``.
        fit: a result of :func:`fit_postprocessing`.
        overwrite: replace an existing ``postprocessing_rules`` entry and table.

    Returns:
        The config and the table written.

    Raises:
        FileExistsError: see :func:`check_fit_targets` (nothing is written then).
    """
    from brats_cggm.core.files import atomic_write_text, write_json

    config_path, table_path = check_fit_targets(run_dir, overwrite)
    config = json.loads(config_path.read_text())
    config[RULES_KEY] = fit.rules.to_config()
    atomic_write_text(table_path, fit_markdown(fit))
    write_json(config_path, config, allow_nan=False)
    return config_path, table_path
