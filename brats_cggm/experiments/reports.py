"""The comparison's reports: mean ± std over seeds, markdown tables, one CSV line per run.

Every report is written through :func:`~brats_cggm.core.files.atomic_write_text` (a temporary file
and a rename), so an interrupted write leaves the previous report or none, never half of one.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from brats_cggm.core import tables
from brats_cggm.core.files import atomic_write_text, refuse_existing, to_jsonable
from brats_cggm.core.stats import format_mean_std, mean_std

__all__ = [
    "REPORT_NAMES",
    "csv_text",
    "existing_reports",
    "markdown_table",
    "publish_reports",
    "summarize",
    "write_csv",
    "write_reports",
]

#: The files :func:`write_reports` writes into the output folder (``statistics.json`` when given its content).
REPORT_NAMES = ("summary.md", "runs.csv", "rows.json", "statistics.json")


def summarize(rows: Sequence[Mapping[str, Any]], baseline: str = "joint") -> list[dict[str, Any]]:
    """Mean ± std over seeds of every validation metric, and step time relative to ``baseline``.

    Args:
        rows: one per run, with ``method``, ``seconds_per_iteration`` and ``validation`` (metric → value).
        baseline: the method whose mean step time is 1.

    Returns:
        One entry per method, in the order of first appearance: ``method``, ``seeds``, ``(mean, std)``
        per metric (over the runs that have it; std None for one run,
        :func:`~brats_cggm.core.stats.mean_std`), ``counts`` (metric → number of runs
        that have it), ``seconds_per_iteration`` and ``time_ratio`` (None without a ``baseline`` run).
    """
    by_method: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        by_method.setdefault(row["method"], []).append(row)
    base_time = None
    if baseline in by_method:
        base_time = statistics.mean(r["seconds_per_iteration"] for r in by_method[baseline])
    summary = []
    for method, runs in by_method.items():
        entry: dict[str, Any] = {"method": method, "seeds": len(runs), "counts": {}}
        keys = dict.fromkeys(key for r in runs for key in r["validation"])  # a partial comparison's rows differ
        for key in keys:
            values = [r["validation"][key] for r in runs if key in r["validation"]]
            stats = mean_std(values)
            entry[key] = (stats["mean"], stats["std"])
            entry["counts"][key] = len(values)
        step = statistics.mean(r["seconds_per_iteration"] for r in runs)
        entry["seconds_per_iteration"] = step
        entry["time_ratio"] = step / base_time if base_time else None
        summary.append(entry)
    return summary


def markdown_table(summary: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """A markdown table: one row per method, ``mean ± std`` cells for the given metric columns.

    Args:
        summary: :func:`summarize`'s entries.
        columns: metric keys; the header drops their ``val/`` prefix.

    Returns:
        The table, ending with a newline; its last column is the step time relative to joint. A metric an
        entry lacks shows as ``—``; one measured on a single run shows its value without ``± std``.
    """
    header = ["method", *[c.removeprefix("val/") for c in columns], "step time vs joint"]
    rows = []
    for entry in summary:
        cells = [entry["method"]]
        for column in columns:
            if column not in entry:  # e.g. a diagnostic not computed yet in a partial comparison
                cells.append("—")
                continue
            mean, std = entry[column]
            cells.append(format_mean_std({"mean": mean, "std": std}))  # one run: no "± std"
        ratio = entry.get("time_ratio")
        cells.append("—" if ratio is None else f"{ratio:.2f}")
        rows.append(cells)
    return tables.markdown_table(header, rows) + "\n"


def csv_text(rows: Sequence[Mapping[str, Any]]) -> str:
    """One line per run: method, seed, step time and every validation metric (sorted by name)."""
    keys = sorted({k for row in rows for k in row["validation"]})
    lines = [
        [r["method"], r["seed"], r["seconds_per_iteration"], *(r["validation"].get(k) for k in keys)] for r in rows
    ]
    return tables.csv_text(["method", "seed", "seconds_per_iteration", *keys], lines, line_end="\r\n")


def write_csv(rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Write :func:`csv_text` to ``path`` (atomically); returns ``path``."""
    return atomic_write_text(path, csv_text(rows))


def existing_reports(out_dir: str | Path, run_folders: Sequence[str] = ()) -> list[Path]:
    """The reports and the run folders (``out_dir/<name>``) that already exist in ``out_dir``."""
    out_dir = Path(out_dir)
    return [out_dir / name for name in (*REPORT_NAMES, *run_folders) if (out_dir / name).exists()]


def write_reports(
    out_dir: str | Path,
    summary_markdown: str,
    rows: Sequence[Mapping[str, Any]],
    overwrite: bool = False,
    statistics: Mapping[str, Any] | None = None,
) -> list[Path]:
    """Write ``summary.md``, ``runs.csv``, ``rows.json`` and, when given, ``statistics.json`` into ``out_dir``.

    Args:
        out_dir: the comparison's folder (created).
        summary_markdown: the text of ``summary.md``.
        rows: one per run (the rows of :func:`~brats_cggm.experiments.runs.train_planned_runs` or of a comparison).
        overwrite: replace reports that exist.
        statistics: the tests and their criterion
            (:func:`~brats_cggm.experiments.comparison_summary.summary_statistics`).

    Returns:
        The paths written.

    Raises:
        FileExistsError: a report exists and ``overwrite`` is False (nothing is written).
    """
    existing = existing_reports(out_dir)
    refuse_existing(existing, overwrite, "or another folder")
    out_dir = Path(out_dir)
    written = [
        atomic_write_text(out_dir / "summary.md", summary_markdown),
        atomic_write_text(out_dir / "rows.json", json.dumps(to_jsonable(list(rows)), indent=2)),
        write_csv(rows, out_dir / "runs.csv"),
    ]
    if statistics is not None:
        written.append(atomic_write_text(out_dir / "statistics.json", json.dumps(to_jsonable(statistics), indent=2)))
    return written


def publish_reports(out_dir: str | Path, dest: str | Path, overwrite: bool = False) -> list[Path]:
    """Copy a comparison's reports (:data:`REPORT_NAMES` that exist) to ``dest`` (e.g. ``docs/raw/<name>``), every
    path into the comparison's folder made relative to it (``<out_dir>/cggm/seed0`` → ``cggm/seed0``, the folder
    itself → ``.``), so the published rows name no machine's folders.

    Args:
        out_dir: the comparison's folder.
        dest: the folder to publish to (created).
        overwrite: replace reports that exist in ``dest``.

    Returns:
        The paths written.

    Raises:
        FileNotFoundError: ``out_dir`` holds no report.
        FileExistsError: a report exists in ``dest`` and ``overwrite`` is False (nothing is written).
    """
    out_dir, dest = Path(out_dir), Path(dest)
    names = [name for name in REPORT_NAMES if (out_dir / name).is_file()]
    if not names:
        raise FileNotFoundError(f"{out_dir} holds no report ({', '.join(REPORT_NAMES)})")
    refuse_existing([dest / name for name in names if (dest / name).exists()], overwrite, "or another folder")
    # The longest spelling first: the absolute folder contains the relative one.
    spellings = sorted({str(out_dir.resolve()), str(out_dir)}, key=len, reverse=True)
    written = []
    for name in names:
        text = (out_dir / name).read_text()
        for spelling in spellings:
            text = text.replace(spelling + "/", "").replace(spelling, ".")
        written.append(atomic_write_text(dest / name, text))
    return written
