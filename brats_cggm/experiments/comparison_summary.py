"""The comparison's ``summary.md``: what ran, its tests (fixed before the runs), then its tables (mean ± std over
seeds)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from brats_cggm.brats.analysis.absence import ABSENCE_DEFINITIONS
from brats_cggm.experiments.brats_comparison import (
    BASELINE,
    DEFAULT_OPTIMIZER,
    PHANTOM_SEED_STRIDE,
    TEST_SEED_OFFSET,
    ComparisonSettings,
    plan_runs,
    run_name,
)
from brats_cggm.experiments.comparison_columns import (
    DICE_COLUMNS,
    GAP_COLUMNS,
    LESIONWISE_COLUMNS,
    MODALITY_DICE_COLUMNS,
    ROBUSTNESS_COLUMNS,
    SHAPLEY_COLUMNS,
    rows_absence,
)
from brats_cggm.experiments.comparison_statistics import (
    comparison_tests,
    criterion_text,
    held_out_key,
    statistics_markdown,
    statistics_metadata,
)
from brats_cggm.experiments.reports import markdown_table, summarize

__all__ = [
    "OPTIMIZER_DESCRIPTIONS",
    "TEST_COLUMNS",
    "summary_markdown",
    "summary_statistics",
    "summary_tests",
]

#: The held-out test set's table: whole-volume Dice, lesion-wise mean Dice, robustness.
TEST_COLUMNS = [held_out_key(c) for c in (*DICE_COLUMNS, LESIONWISE_COLUMNS[-1], *ROBUSTNESS_COLUMNS)]


#: How each optimiser is described in ``summary.md``.
OPTIMIZER_DESCRIPTIONS = {
    "adamw": "adamw = the bundle's AdamW (network: warm-up, then MONAI's cosine schedule to 0; heads: constant)",
    "sgd": "sgd = the CGGM authors' SGD (momentum 0.9, weight decay 3e-4; network 4e-4 → 1e-2 warm-up, cosine "
    "to 1e-3; heads 6e-3), configs/optimizers/sgd_paper.yaml",
}


def summary_tests(rows: Sequence[dict[str, Any]], settings: ComparisonSettings) -> list[dict[str, Any]]:
    """The comparison's tests: every multimodal method against joint with the same optimiser, on
    ``settings.family`` (:func:`~brats_cggm.experiments.comparison_statistics.comparison_tests`).

    Args:
        rows: the rows finished so far.
        settings: the comparison (its family, margin and α).

    Returns:
        The tests; none when joint is not among the methods.
    """
    if BASELINE not in settings.methods:
        return []
    baselines = {
        run_name(method, optimizer): run_name(BASELINE, optimizer)
        for optimizer in settings.optimizers
        for method in settings.methods
        if method != BASELINE
    }
    multimodal = [r for r in rows if r.get("modalities") is None]
    return comparison_tests(multimodal, baselines, settings.family, settings.equivalence_margin, settings.alpha)


def summary_statistics(rows: Sequence[dict[str, Any]], settings: ComparisonSettings) -> dict[str, Any]:
    """``statistics.json``: the criterion, margin, family and tests (:func:`summary_tests`).

    Args:
        rows: the rows finished so far.
        settings: the comparison.

    Returns:
        The mapping (:func:`~brats_cggm.experiments.comparison_statistics.statistics_metadata`).
    """
    tests = summary_tests(rows, settings)
    return statistics_metadata(tests, settings.family, settings.equivalence_margin, settings.alpha)


def _extra_seeds_text(settings: ComparisonSettings) -> str:
    extra = [f"{name} also {seeds}" for name, seeds in settings.extra_seeds.items() if seeds]
    return f" ({'; '.join(extra)})" if extra else ""


def _data_text(settings: ComparisonSettings) -> str:
    """Where the runs' data and the held-out test set come from."""
    if settings.phantoms_per_seed:
        data = (
            f"{settings.dataset_dir}/seed<k> (a phantom draw per seed k, generator seed s0 + "
            f"{PHANTOM_SEED_STRIDE}·k; the seed also chooses the validation cases)"
        )
    else:
        data = settings.dataset_dir
    if settings.test_phantoms:
        data += (
            f"; held-out test set: {settings.test_phantoms} phantoms per seed k in "
            f"{settings.out_dir / 'test_phantoms'}/seed<k> (same generator settings, generator seed s0 + "
            f"{PHANTOM_SEED_STRIDE}·k + {TEST_SEED_OFFSET}; used for the test/ columns only)"
        )
    return data


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
    tests = summary_tests(rows, settings)
    text = [
        f"{len(settings.seeds)} seed(s) {settings.seeds}{_extra_seeds_text(settings)}, "
        f"{settings.max_epochs} epochs each, data "
        f"{_data_text(settings)}{smoke}; mean ± std over seeds (a value without ± is a single run); "
        "validation Dice on whole volumes of the last epoch's network (every diagnostic uses it too); "
        "step time = mean training iteration time relative to joint with the same optimiser "
        "(forward, backward, optimizer steps; epoch-end work such as Re-learning's diagnosis is not in it). "
        "Optimiser: " + "; ".join(OPTIMIZER_DESCRIPTIONS[o] for o in settings.optimizers) + ".\n",
    ]
    if settings.method_overlays:
        named = "; ".join(f"{name} = {', '.join(map(str, files))}" for name, files in settings.method_overlays.items())
        text.append(f"Named methods (overlays after the bundle's train.yaml, in order): {named}.\n")
    if BASELINE in settings.methods:
        text.append(
            criterion_text(settings.family, settings.equivalence_margin, settings.alpha, len(tests))
            + " (statistics.json holds every test.)\n"
        )
    planned = len(plan_runs(settings))
    if len(rows) < planned:
        text.append(f"Partial results: {len(rows)} of {planned} runs finished.\n")
    if tests:
        text += ["Tests against joint (test/ columns when the held-out test set was measured):\n"]
        text.append(statistics_markdown(tests))
    if any(column in entry for entry in summary for column in TEST_COLUMNS):
        text += [
            "Held-out test set (never trained or validated on; whole-volume Dice, lesion-wise mean Dice, "
            "robustness as below):\n",
            markdown_table(summary, TEST_COLUMNS),
            "\nValidation cases:\n",
        ]
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
