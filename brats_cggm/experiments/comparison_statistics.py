"""The comparison's tests, fixed before the runs: each method against the baseline on a declared family of metrics.

For every method other than its baseline (joint with the same optimiser) and every metric of the family, the
paired differences over the seeds both have, their mean and 95% interval, the two-sided paired t-test, the
Holm–Bonferroni adjustment across the whole table (every method × metric × optimiser: the family) and the TOST
equivalence verdict at the margin (:func:`~brats_cggm.core.stats.paired_comparison`,
:func:`~brats_cggm.core.stats.holm_adjust`). A difference is called significant when its Holm-adjusted p-value
is below α.

A metric is read from the held-out test set (its :func:`held_out_key` column) when any row has that column, else
from the validation cases; each test records which (``source``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from brats_cggm.core import tables
from brats_cggm.core.stats import holm_adjust, paired_comparison
from brats_cggm.experiments.comparison_columns import ROBUSTNESS_COLUMNS, dice_key

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_FAMILY",
    "DEFAULT_MARGIN",
    "TEST_PREFIX",
    "comparison_tests",
    "criterion_text",
    "held_out_key",
    "statistics_markdown",
    "statistics_metadata",
]

#: The metrics tested by default: the fused network's mean Dice and the mean Dice over the 15 modality subsets.
DEFAULT_FAMILY: tuple[str, ...] = (dice_key("mean"), ROBUSTNESS_COLUMNS[0])
#: The equivalence margin by default: ±0.01 in the metric's units (Dice).
DEFAULT_MARGIN = 0.01
#: The family-wise level by default.
DEFAULT_ALPHA = 0.05
#: The prefix of a row's columns measured on the held-out test set.
TEST_PREFIX = "test/"
#: The coverage of the interval of a mean difference.
CONFIDENCE = 0.95


def held_out_key(column: str) -> str:
    """The column of a metric measured on the held-out test set: ``val/dice/mean`` → ``test/dice/mean``,
    ``robustness/mean_subsets`` → ``test/robustness/mean_subsets``.

    Args:
        column: a validation column (:mod:`~brats_cggm.experiments.comparison_columns`).

    Returns:
        Its test-set column.
    """
    return TEST_PREFIX + column.removeprefix("val/")


def _source(rows: Sequence[Mapping[str, Any]], metric: str) -> tuple[str, str]:
    """(``test`` or ``validation``, the column read) for a metric of the family."""
    column = held_out_key(metric)
    if any(column in row["validation"] for row in rows):
        return "test", column
    return "validation", metric


def _by_seed(rows: Sequence[Mapping[str, Any]], method: str, column: str) -> dict[int, float]:
    return {
        int(row["seed"]): float(row["validation"][column])
        for row in rows
        if row["method"] == method and column in row["validation"]
    }


def comparison_tests(
    rows: Sequence[Mapping[str, Any]],
    baselines: Mapping[str, str],
    family: Sequence[str] = DEFAULT_FAMILY,
    margin: float = DEFAULT_MARGIN,
    alpha: float = DEFAULT_ALPHA,
) -> list[dict[str, Any]]:
    """Every method against its baseline on every metric of the family, Holm-adjusted across all of them.

    Args:
        rows: the comparison's rows (``method``, ``seed``, ``validation``).
        baselines: method → the method it is compared with (a baseline itself is not listed); the order of the
            table.
        family: the metrics (validation columns; their test columns are used when present).
        margin: the equivalence margin (:func:`~brats_cggm.core.stats.tost_paired`).
        alpha: the family-wise level of the Holm criterion and the level of the equivalence tests.

    Returns:
        One entry per method and metric: ``method``, ``baseline``, ``metric``, ``source``, ``column``,
        :func:`~brats_cggm.core.stats.paired_comparison`'s entries, ``p_holm`` and ``significant``
        (``p_holm < alpha``; False without a test).
    """
    tests = []
    for metric in family:
        source, column = _source(rows, metric)
        for method, baseline in baselines.items():
            result = paired_comparison(
                _by_seed(rows, method, column), _by_seed(rows, baseline, column), margin, alpha, CONFIDENCE
            )
            tests.append(
                {"method": method, "baseline": baseline, "metric": metric, "source": source, "column": column, **result}
            )
    for test, adjusted in zip(tests, holm_adjust([t["p"] for t in tests])):
        test["p_holm"] = adjusted
        test["significant"] = adjusted is not None and adjusted < alpha
    return tests


def criterion_text(family: Sequence[str], margin: float, alpha: float, tests: int) -> str:
    """The criterion in words, for ``summary.md``'s header.

    Args:
        family: the metrics tested.
        margin: the equivalence margin.
        alpha: the family-wise level.
        tests: the number of tests in the family (m).

    Returns:
        One sentence.
    """
    return (
        f"Statistics fixed before the runs: family = {list(family)} × each method vs joint of its optimiser "
        f"(m = {tests} tests); paired differences over the seeds both runs have; two-sided paired t-test, "
        f"Holm–Bonferroni across the family, significant when the adjusted p < α = {alpha:g}; "
        f"{CONFIDENCE:.0%} CI of the mean difference (t interval); equivalence: TOST (two one-sided paired "
        f"t-tests, each at α = {alpha:g}) with the margin ±{margin:g}, fixed before the runs; n < 2 or zero "
        "variance: no test (counted in m as p = 1)."
    )


def statistics_metadata(
    tests: Sequence[Mapping[str, Any]], family: Sequence[str], margin: float, alpha: float
) -> dict[str, Any]:
    """What ``statistics.json`` holds: the criterion, the margin, the family and every test.

    Args:
        tests: :func:`comparison_tests`'s entries.
        family: the metrics tested.
        margin: the equivalence margin.
        alpha: the family-wise level.

    Returns:
        The mapping.
    """
    return {
        "criterion": f"two-sided paired t-test, Holm-Bonferroni across the family, adjusted p < {alpha:g}",
        "alpha": alpha,
        "confidence": CONFIDENCE,
        "equivalence": {"test": "TOST (two one-sided paired t-tests)", "margin": margin, "alpha": alpha},
        "family": list(family),
        "tests": [dict(test) for test in tests],
    }


def _p(value: float | None) -> str:
    return "—" if value is None else f"{value:.3g}"


def statistics_markdown(tests: Sequence[Mapping[str, Any]]) -> str:
    """The table of :func:`comparison_tests`' entries.

    Args:
        tests: the entries.

    Returns:
        A markdown table ending with a newline: method, baseline, metric (and where it was measured), n, mean
        difference, its interval, raw and Holm-adjusted p, the Holm verdict, the TOST p and verdict, and why a
        test did not run.
    """
    header = ["method", "vs", "metric", "n", "mean diff", "95% CI", "p", "p (Holm)", "significant", "TOST p"]
    header += ["equivalence", "note"]
    lines = []
    for t in tests:
        ci = "—" if t["ci"] is None else f"[{t['ci'][0]:+.3f}, {t['ci'][1]:+.3f}]"
        mean = "—" if t["mean"] is None else f"{t['mean']:+.3f}"
        significant = "—" if t["p_holm"] is None else ("yes" if t["significant"] else "no")
        lines.append(
            [
                t["method"],
                t["baseline"],
                f"{t['metric']} ({t['source']})",
                str(t["n"]),
                mean,
                ci,
                _p(t["p"]),
                _p(t["p_holm"]),
                significant,
                _p(t["tost"]["p"]),
                t["tost"]["verdict"],
                t["note"] or "",
            ]
        )
    return tables.markdown_table(header, lines) + "\n"
