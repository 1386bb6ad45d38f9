"""The comparison's ``summary.md``: what ran, then its tables (mean ± std over seeds)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from brats_cggm.brats.analysis.absence import ABSENCE_DEFINITIONS
from brats_cggm.experiments.brats_comparison import BASELINE, DEFAULT_OPTIMIZER, ComparisonSettings, plan_runs, run_name
from brats_cggm.experiments.comparison_columns import (
    DICE_COLUMNS,
    GAP_COLUMNS,
    LESIONWISE_COLUMNS,
    MODALITY_DICE_COLUMNS,
    ROBUSTNESS_COLUMNS,
    SHAPLEY_COLUMNS,
    rows_absence,
)
from brats_cggm.experiments.reports import markdown_table, summarize

__all__ = [
    "OPTIMIZER_DESCRIPTIONS",
    "summary_markdown",
]


#: How each optimiser is described in ``summary.md``.
OPTIMIZER_DESCRIPTIONS = {
    "adamw": "adamw = the bundle's AdamW (network: warm-up, then MONAI's cosine schedule to 0; heads: constant)",
    "sgd": "sgd = the CGGM authors' SGD (momentum 0.9, weight decay 3e-4; network 4e-4 → 1e-2 warm-up, cosine "
    "to 1e-3; heads 6e-3), configs/optimizers/sgd_paper.yaml",
}


def summary_markdown(rows: Sequence[dict[str, Any]], settings: ComparisonSettings) -> str:
    """``summary.md``: what ran, then Dice, auxiliary Dice, Shapley, robustness and encoder-gap tables (mean ± std
    over seeds), and the unimodal runs' Dice.

    Args:
        rows: :func:`run_and_valuate`'s rows (all of them, or those finished so far).
        settings: the comparison they come from.

    Returns:
        The markdown text.
    """
    multimodal = [r for r in rows if r.get("modalities") is None]
    unimodal = [r for r in rows if r.get("modalities") is not None]
    summary = [
        entry
        for optimizer in settings.optimizers
        for entry in summarize(
            [r for r in multimodal if r.get("optimizer", DEFAULT_OPTIMIZER) == optimizer],
            baseline=run_name(BASELINE, optimizer),
        )
    ]
    smoke = " (--smoke: tiny pipeline check, numbers meaningless)" if settings.smoke else ""
    text = [
        f"{len(settings.seeds)} seed(s) {settings.seeds}, {settings.max_epochs} epochs each, data "
        f"{settings.dataset_dir}{smoke}; mean ± std over seeds (a value without ± is a single run); "
        "validation Dice on whole volumes of the last epoch's network (every diagnostic uses it too); "
        "step time = mean training iteration time relative to joint with the same optimiser "
        "(forward, backward, optimizer steps; epoch-end work such as Re-learning's diagnosis is not in it). "
        "Optimiser: " + "; ".join(OPTIMIZER_DESCRIPTIONS[o] for o in settings.optimizers) + ".\n",
    ]
    planned = len(plan_runs(settings))
    if len(rows) < planned:
        text.append(f"Partial results: {len(rows)} of {planned} runs finished.\n")
    text += [
        markdown_table(summary, DICE_COLUMNS),
        "\nLesion-wise Dice (the official BraTS evaluator's: lesions matched one to one, each unmatched one scores 0), "
        "same validation cases and networks:\n",
        markdown_table(summary, LESIONWISE_COLUMNS),
        "\nAuxiliary heads (per-modality Dice on the validation volumes):\n",
        markdown_table(summary, MODALITY_DICE_COLUMNS),
    ]
    if settings.shapley:
        definitions = rows_absence(multimodal) or [settings.absent]
        absent = " and ".join(f"`{d}`, {ABSENCE_DEFINITIONS[d]}" for d in definitions)
        if len(definitions) > 1:
            absent += " — these rows mix the definitions: their valuation columns are not comparable"
        text += [
            f"\nShapley contribution of each modality to the mean Dice (validation cases; an absent modality: "
            f"{absent}):\n",
            markdown_table(summary, SHAPLEY_COLUMNS),
            "\nMissing-modality robustness: mean Dice over the 15 non-empty modality subsets (the others absent, "
            "as above), and the worst subset's:\n",
            markdown_table(summary, ROBUSTNESS_COLUMNS),
        ]
    if settings.unimodal:
        text += [
            "\nEncoder gap per modality: probe Dice of the unimodal run's encoder − probe Dice of this run's "
            "encoder (the same probe fitted on each frozen encoder; brats_cggm.brats.analysis.diagnostics):\n",
            markdown_table(summary, GAP_COLUMNS),
            "\nUnimodal runs (the joint method on one modality):\n",
            markdown_table(summarize(unimodal, baseline=BASELINE), DICE_COLUMNS),
        ]
    scaled = {m: v for m, v in settings.scaled_schedules().items() if v}
    if scaled:
        text.append(f"\nSchedules scaled to the budget: {json.dumps(scaled)}\n")
    return "\n".join(text)
