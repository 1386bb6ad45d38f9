"""Rendering and writing the imbalance diagnostics: ``diagnostics.md``, its plots and ``diagnostics.json``."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from brats_cggm.brats.analysis.diagnostics import summarize_diagnoses
from brats_cggm.brats.analysis.runs import REGIONS
from brats_cggm.core.figures import import_pyplot, save_png
from brats_cggm.core.stats import format_mean_std
from brats_cggm.core.tables import markdown_table

__all__ = [
    "DIAGNOSTICS_FILES",
    "diagnostics_markdown",
    "write_diagnostics_report",
]


#: What :func:`write_diagnostics_report` writes (the plots only with matplotlib installed).
DIAGNOSTICS_FILES = ("diagnostics.json", "diagnostics.md", "encoder_gap.png", "shapley.png", "subset_dice.png")


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
    ``plots``.

    Args:
        summary: :func:`~brats_cggm.brats.analysis.diagnostics.summarize_diagnoses`'s summary.
        reports: the runs' reports (:func:`~brats_cggm.brats.analysis.diagnostics.diagnose_run`).
        plots: link the plots.

    Returns:
        The markdown text.
    """
    runs = len(summary["runs"])
    text = [
        f"# Imbalance diagnostics\n\n{runs} run(s); mean ± std over runs (sample std; a value without ± is a "
        "single run).\n"
    ]
    text += ["Networks diagnosed:\n", *_networks(reports), ""]
    if "lesionwise_dice" in summary:
        text += [
            "## Lesion-wise Dice\n",
            "The official BraTS evaluator's lesion-wise Dice on the validation cases (an unmatched lesion counts 0).\n",
            markdown_table(REGIONS, [[format_mean_std(summary["lesionwise_dice"][r]) for r in REGIONS]], "right")
            + "\n",
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
        ]
        rows = []
        for m, row in summary["encoder_gap"].items():
            cells = [format_mean_std(row[q]) for q in ("multimodal_probe", "unimodal_probe", "unimodal_network")]
            rows.append([m, *cells, format_mean_std(row["gap"], True), format_mean_std(row["gap_vs_network"], True)])
        header = ["modality", "multimodal probe", "unimodal probe", "unimodal network", "gap", "gap vs network"]
        text.append(markdown_table(header, rows, ["left"] + ["right"] * 5))
        text.append("\n![encoder gap](encoder_gap.png)\n" if plots else "")
    if "shapley" in summary:
        absent = f"`{summary['absent']}`, {summary['absent_definition']}"
        text += [
            "## Shapley shares\n",
            f"Each modality's Shapley contribution to the mean Dice. An absent modality: {absent}.\n",
            markdown_table(
                ["modality", "φ mean Dice"],
                [[m, format_mean_std(s, True)] for m, s in summary["shapley"].items()],
                ["left", "right"],
            ),
            "\n![Shapley](shapley.png)\n" if plots else "",
            "## Missing-modality robustness\n",
            f"Mean Dice over the 15 non-empty subsets (an absent modality: {absent}): "
            f"{format_mean_std(summary['mean_over_subsets'])}; worst subset: "
            f"{format_mean_std(summary['worst_subset_dice'])} ({', '.join(summary['worst_subsets'])}).\n",
            markdown_table(
                ["subset", "mean Dice"],
                [[s, format_mean_std(v)] for s, v in summary["subset_dice"].items()],
                ["left", "right"],
            ),
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
            axis.bar(x, [gap[m][q]["mean"] for m in gap], width, yerr=[gap[m][q]["std"] or 0.0 for m in gap], label=q)
        axis.set_xticks(np.arange(len(gap)), list(gap))
        axis.set_ylabel("validation mean Dice")
        axis.legend(fontsize=8)
        written.append(save_png(figure, out_dir / "encoder_gap.png"))
        plt.close(figure)
    if "shapley" in summary:
        shapley = summary["shapley"]
        figure, axis = plt.subplots(figsize=(5, 3.5))
        axis.bar(list(shapley), [s["mean"] for s in shapley.values()], yerr=[s["std"] or 0.0 for s in shapley.values()])
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
        figure.colorbar(image, ax=axis, label=f"absent = {summary['absent']}")
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
    from brats_cggm.core.files import atomic_write_text, refuse_existing, to_jsonable

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"--output-dir {out_dir} is a file, not a folder")
    refuse_existing((out_dir / name for name in DIAGNOSTICS_FILES), overwrite, "to replace the report")
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
