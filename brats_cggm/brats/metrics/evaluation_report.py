"""Writing an evaluation: the per-case CSV, the summary JSON and the markdown table; the bundle's evaluation."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from brats_cggm.brats.metrics.case_scores import ChallengeOptions
from brats_cggm.brats.metrics.evaluation import EvaluationResult, evaluate_cases, summarize
from brats_cggm.core.stats import format_mean_std
from brats_cggm.core.tables import csv_text, markdown_table

__all__ = [
    "evaluate_items",
    "summary_markdown",
    "write_results",
]


#: Columns of the markdown table: (title, column stem).
_MARKDOWN_COLUMNS: tuple[tuple[str, str], ...] = (
    ("Dice", "global_dsc"),
    ("HD95", "global_hd95"),
    ("NSD", "global_nsd"),
    ("lesion Dice", "lesionwise_penalised_dsc"),
    ("lesion HD95", "lesionwise_penalised_hd95"),
    ("F1 (RQ)", "all_instance_f1"),
    ("PQ", "pq_dsc"),
)


def _mean_std(stats: Mapping[str, Any]) -> str:
    return "n/a" if stats["n"] == 0 else format_mean_std(stats, digits=4)


def summary_markdown(summary: Mapping[str, Any]) -> str:
    """A markdown table of a challenge summary: one row per region, mean ± std (population) over the cases.

    Args:
        summary: a result of :func:`summarize` with the challenge metrics.

    Returns:
        The table, with a line saying what the columns are.

    Raises:
        ValueError: if the summary holds the legacy metrics.
    """
    if "regions" not in summary:
        raise ValueError("summary_markdown needs a summary of the challenge metrics")
    header = ["region", *(title for title, _ in _MARKDOWN_COLUMNS), "empty reference"]
    lines = [
        f"{summary['n_evaluated']} of {summary['n_cases']} cases evaluated; mean ± std over the cases (population); "
        f"Dice, HD95 (mm, {summary['hd95']}), NSD: global per region; lesion Dice and HD95 count unmatched lesions as "
        f"0 and {summary['hd95_max_mm']:g} mm; F1 (RQ) and PQ: lesion detection.",
        "",
    ]
    rows = [
        [
            region.upper(),
            *(_mean_std(summary["metrics"][f"{stem}_{region}"]) for _, stem in _MARKDOWN_COLUMNS),
            summary["empty_reference"][region],
        ]
        for region in summary["regions"]
    ]
    return "\n".join([*lines, markdown_table(header, rows)]) + "\n"


def _cell(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.6g}" if isinstance(value, float) else value


def _csv_text(result: EvaluationResult) -> str:
    fields = ["case_id", "status", *result.columns, "error"]
    return csv_text(fields, ([_cell(row.get(k)) for k in fields] for row in result.rows))


def write_results(
    result: EvaluationResult,
    csv_path: str | os.PathLike,
    json_path: str | os.PathLike,
    overwrite: bool = False,
    markdown_path: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Write the per-case CSV, the summary JSON and (challenge metrics) the markdown table, each atomically.

    Args:
        result: the evaluation.
        csv_path: per-case CSV file.
        json_path: summary JSON file (NaN as ``null``).
        overwrite: replace existing files.
        markdown_path: markdown table file (see :func:`summary_markdown`); None writes none.

    Returns:
        The summary.

    Raises:
        FileExistsError: if a file exists and ``overwrite`` is False (nothing is written then).
        ValueError: if a markdown table is asked of the legacy metrics.
    """
    from brats_cggm.core.files import atomic_write_text, refuse_existing, write_json

    paths = [Path(csv_path), Path(json_path)] + ([Path(markdown_path)] if markdown_path is not None else [])
    refuse_existing(paths, overwrite)
    summary = summarize(result)
    table = summary_markdown(summary) if markdown_path is not None else None
    atomic_write_text(csv_path, _csv_text(result))
    write_json(json_path, _nulls(summary), allow_nan=False)
    if markdown_path is not None and table is not None:
        atomic_write_text(markdown_path, table)
    return summary


def _nulls(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _nulls(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nulls(v) for v in value]
    return _null(value)


def evaluate_items(
    items: Sequence[Mapping[str, Any]],
    pred_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    convention: str = "brats2021",
    ref_convention: str | None = None,
    name_template: str = "{case_id}.nii.gz",
    overwrite: bool = False,
    hd95: str | None = None,
) -> dict[str, Any]:
    """Evaluate the predictions of labelled data list items and write ``metrics.csv`` and ``metrics_summary.json``.

    For the bundle's ``evaluate.yaml``. With ``hd95`` the challenge metrics (and ``metrics.md``), else the legacy
    ones.

    Args:
        items: cases with ``case_id`` and ``label`` (``DatasetSpec.items``).
        pred_dir: folder of the predictions.
        output_dir: where to write the results.
        convention: label convention of the predictions.
        ref_convention: label convention of the labels.
        name_template: prediction file names.
        overwrite: replace existing result files.
        hd95: ``"pooled"`` or ``"directed"``: the challenge metrics with that HD95 (see :class:`ChallengeOptions`);
            None: the legacy metrics.

    Returns:
        The summary.
    """
    options = None if hd95 is None else ChallengeOptions(hd95=hd95)
    pairs = {}
    for item in items:
        pred = Path(pred_dir) / name_template.format(case_id=item["case_id"])
        pairs[item["case_id"]] = (str(pred) if pred.is_file() else None, item.get("label"))
    result = evaluate_cases(pairs, convention, ref_convention, options=options)
    out = Path(output_dir)
    markdown = None if options is None else out / "metrics.md"
    return write_results(result, out / "metrics.csv", out / "metrics_summary.json", overwrite, markdown)


def _null(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value
