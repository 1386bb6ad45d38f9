"""Experiments: a bundle trained per balancing method and seed under one budget, valuated and tabulated.

- :mod:`~brats_cggm.experiments.runs`: one ``monai.bundle run`` subprocess per method and seed
  (:func:`train_run`, :func:`run_comparison`, :func:`train_planned_runs`, which can skip finished runs and
  reports each run as it finishes) and the methods' schedules scaled to a short budget
  (:func:`short_run_overrides`).
- :mod:`~brats_cggm.experiments.reports`: mean ± std over seeds, markdown tables, ``summary.md``,
  ``runs.csv``, ``rows.json`` and ``statistics.json`` (written atomically, never over existing reports unless
  asked), and their publishing with relative paths (:func:`publish_reports`).
- :mod:`~brats_cggm.experiments.brats_comparison`: the comparison on the BraTS bundle (its runs per
  method, seed, optimiser and unimodal reference, its metric columns, the Shapley valuation, robustness and
  encoder gaps of each run).
- :mod:`~brats_cggm.experiments.comparison_statistics`: each method against the baseline on a family of metrics
  fixed before the runs (paired t-test, Holm, TOST, CI).
- :mod:`~brats_cggm.experiments.comparison_summary`: the comparison's ``summary.md`` text.

The command line is :mod:`brats_cggm.cli.compare` (``brats-cggm-compare``).
"""

from brats_cggm.experiments.brats_comparison import ComparisonSettings, plan_runs, run_and_valuate
from brats_cggm.experiments.comparison_summary import summary_markdown
from brats_cggm.experiments.reports import markdown_table, publish_reports, summarize, write_csv, write_reports
from brats_cggm.experiments.runs import PlannedRun, run_comparison, short_run_overrides, train_planned_runs, train_run

__all__ = [
    "ComparisonSettings",
    "PlannedRun",
    "markdown_table",
    "plan_runs",
    "publish_reports",
    "run_and_valuate",
    "run_comparison",
    "short_run_overrides",
    "summarize",
    "summary_markdown",
    "train_planned_runs",
    "train_run",
    "write_csv",
    "write_reports",
]
