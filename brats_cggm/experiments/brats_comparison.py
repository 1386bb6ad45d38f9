"""Every balancing method on the BraTS bundle, same seeds and budget: Dice, auxiliary Dice, Shapley values.

The bundle (``bundles/brats_cggm``, phantoms by default) is trained once per method overlay
(``configs/balancers/<method>.yaml``) and seed by :func:`~brats_cggm.experiments.runs.run_comparison`;
each run's final network is then valuated with :func:`brats_cggm.brats.valuation.valuate_bundle` on that
run's validation cases (Shapley contribution of each modality to the mean Dice), and
:func:`summary_markdown` tabulates the rows.

Budget: ``max_epochs`` for every method, validation once, at the end (``val_interval = max_epochs``).
The methods' epoch schedules are scaled to the budget by
:func:`~brats_cggm.experiments.runs.short_run_overrides` unless ``paper_schedules``.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from brats_cggm.brats.data import DEFAULT_MODALITIES
from brats_cggm.brats.labels import REGIONS
from brats_cggm.core.devices import resolve_device
from brats_cggm.experiments.reports import markdown_table, summarize
from brats_cggm.experiments.runs import run_comparison, short_run_overrides

__all__ = [
    "BASELINE",
    "BUNDLE_CONFIG",
    "DICE_COLUMNS",
    "MODALITY_DICE_COLUMNS",
    "OVERLAY_DIR",
    "SHAPLEY_COLUMNS",
    "SMOKE_OVERRIDES",
    "ComparisonSettings",
    "default_methods",
    "dice_key",
    "modality_dice_key",
    "prepare_phantoms",
    "run_and_valuate",
    "shapley_key",
    "shapley_of_run",
    "summary_markdown",
]

_REPO = Path(__file__).resolve().parents[2]
#: The bundle every method is trained with.
BUNDLE_CONFIG = _REPO / "bundles" / "brats_cggm" / "configs" / "train.yaml"
#: ``<method>.yaml``: the balancer overlay of each registered method.
OVERLAY_DIR = _REPO / "configs" / "balancers"
#: The method step times are relative to, listed first.
BASELINE = "joint"

#: ``smoke``: a pipeline check on tiny phantoms (overrides of the BraTS bundle); its numbers mean nothing.
SMOKE_OVERRIDES: dict[str, Any] = {
    "phantoms": {"n": 6, "shape": [32, 32, 32], "seed": 0},
    "patch_size": [16, 16, 16],
    "network_def#features": [4, 8, 16],
    "num_samples": 1,
    "sw_batch_size": 8,
    "sw_overlap": 0.0,
    "val_fraction": 0.34,
}


def dice_key(region: str) -> str:
    """The validation Dice of a region (``tc``, ``wt``, ``et``) or of their ``mean``, as in ``metrics.json``."""
    return f"val/dice/{region}"


def modality_dice_key(modality: str) -> str:
    """The validation Dice of a modality's auxiliary head, as in ``metrics.json``."""
    return f"val/modality_dice/{modality}"


def shapley_key(modality: str) -> str:
    """A modality's mean Shapley contribution to the mean Dice, as added to a run's row."""
    return f"shapley/{modality}"


DICE_COLUMNS = [dice_key(region) for region in (*REGIONS, "mean")]
MODALITY_DICE_COLUMNS = [modality_dice_key(m) for m in DEFAULT_MODALITIES]
SHAPLEY_COLUMNS = [shapley_key(m) for m in DEFAULT_MODALITIES]


def default_methods() -> list[str]:
    """Every registered balancer, the baseline first."""
    from brats_cggm.balancing import available_balancers

    return sorted(available_balancers(), key=lambda name: name != BASELINE)


@cache
def _bundle_defaults() -> dict[str, Any]:
    import yaml

    return yaml.safe_load(BUNDLE_CONFIG.read_text())


@dataclass
class ComparisonSettings:
    """One comparison: which runs, under which budget, into which folder.

    Attributes:
        out_dir: each run goes to ``out_dir/<method>/seed<k>``; the reports to ``out_dir``.
        methods: registered balancer names (each with an overlay in :data:`OVERLAY_DIR`).
        seeds: the seeds of every method.
        max_epochs: the budget of every run; validation runs once, after the last epoch.
        device: training and valuation device (e.g. ``cuda:0``); None: the bundle's for training, and CUDA
            when available for the valuation.
        paper_schedules: keep the overlays' epoch schedules instead of scaling them to ``max_epochs``.
        shapley: valuate every run's network.
        smoke: tiny phantoms and network (:data:`SMOKE_OVERRIDES`), written to ``out_dir/phantoms``.
        extra_overrides: bundle overrides for every run, applied after the others (e.g. ``dataset_dir``).
    """

    out_dir: Path
    methods: Sequence[str] = field(default_factory=default_methods)
    seeds: Sequence[int] = (0, 1)
    max_epochs: int = 20
    device: str | None = None
    paper_schedules: bool = False
    shapley: bool = True
    smoke: bool = False
    extra_overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        self.methods, self.seeds = list(self.methods), list(self.seeds)
        if self.max_epochs < 1:
            raise ValueError(f"max_epochs must be at least 1, got {self.max_epochs}")

    def overrides(self) -> dict[str, Any]:
        """The bundle overrides shared by every run."""
        overrides: dict[str, Any] = {"max_epochs": self.max_epochs, "val_interval": self.max_epochs}
        if self.smoke:
            overrides.update(SMOKE_OVERRIDES)
            overrides["phantom_dir"] = str(self.out_dir / "phantoms")
        if self.device:
            overrides["device"] = f"$torch.device('{self.device}')"
        return {**overrides, **self.extra_overrides}

    def scaled_schedules(self) -> dict[str, dict[str, Any]]:
        """Method → its schedule overrides for this budget (empty with ``paper_schedules``)."""
        if self.paper_schedules:
            return {}
        return {m: short_run_overrides(m, self.max_epochs) for m in self.methods}

    @property
    def dataset_dir(self) -> str:
        """Where the runs read (or generate) their data."""
        overrides = self.overrides()
        return str(overrides.get("dataset_dir", overrides.get("phantom_dir", _bundle_defaults()["phantom_dir"])))

    @property
    def val_fraction(self) -> float:
        """The bundle's validation share of the cases."""
        return float(self.overrides().get("val_fraction", _bundle_defaults()["val_fraction"]))


def prepare_phantoms(settings: ComparisonSettings) -> Path | None:
    """Generate the runs' phantom data set now, as each run's bundle would, unless it already holds cases.

    Runs trained at the same time would otherwise all start writing it, and a run that starts while
    another is writing would find a partial data set.

    Args:
        settings: the comparison; its ``phantoms`` override (a mapping, or its text as given on the
            command line) or the bundle's ``phantoms`` say what to generate.

    Returns:
        The phantom folder, or None when the runs read another data set.

    Raises:
        ValueError: ``phantoms#<key>`` overrides (give the whole ``phantoms`` mapping instead).
    """
    from brats_cggm.brats.data import resolve_dataset_dir

    overrides, defaults = settings.overrides(), _bundle_defaults()
    phantom_dir = Path(overrides.get("phantom_dir", defaults["phantom_dir"]))
    if Path(settings.dataset_dir).resolve() != phantom_dir.resolve():
        return None
    if any(key.startswith("phantoms#") for key in overrides):
        raise ValueError("override the whole phantoms mapping, e.g. phantoms={'n': 8}, not one of its keys")
    phantoms = overrides.get("phantoms", defaults["phantoms"])
    if isinstance(phantoms, str):
        phantoms = ast.literal_eval(phantoms)  # how the bundle's command line reads it
    return resolve_dataset_dir(settings.dataset_dir, phantom_dir, **phantoms)  # the bundle's own call


def _validation_case_ids(dataset_dir: str, seed: int, val_fraction: float) -> list[str]:
    """The cases a run with ``seed`` validated on (the bundle's split)."""
    from brats_cggm.brats.data import discover_dataset, split_datalist

    spec = discover_dataset(dataset_dir, DEFAULT_MODALITIES, validate="none")
    return [str(item["case_id"]) for item in split_datalist(spec.items, val_fraction=val_fraction, seed=seed)[1]]


def shapley_of_run(run_dir: Path, dataset_dir: str, seed: int, val_fraction: float, device: str) -> dict[str, float]:
    """Each modality's mean Shapley contribution to the mean Dice over the run's validation cases.

    The run's ``output_dir`` is the bundle (its ``configs/inference.json``); the weights are its
    ``models/model.pt`` (validation runs once, at the end, so that is the final network), else its
    ``models/checkpoint.pt``. The valuation's reports go to ``run_dir/valuation``.

    Args:
        run_dir: the run's ``output_dir``.
        dataset_dir: the data set the run trained on.
        seed: the run's seed (it chose the validation cases).
        val_fraction: the run's validation share.
        device: where the network runs.

    Returns:
        :func:`shapley_key` → mean contribution, one per modality.
    """
    from brats_cggm.brats.valuation import valuate_bundle

    checkpoint = run_dir / "models" / "model.pt"
    if not checkpoint.is_file():
        checkpoint = run_dir / "models" / "checkpoint.pt"
    summary = valuate_bundle(
        run_dir,
        dataset_dir,
        run_dir / "valuation",
        checkpoint=checkpoint,
        device=device,
        case_ids=_validation_case_ids(dataset_dir, seed, val_fraction),
        overwrite=True,  # the run was just trained into this folder
    )
    return {shapley_key(m): summary["shapley"][m]["mean"] for m in summary["modalities"]}


def run_and_valuate(settings: ComparisonSettings, jobs: int = 1) -> list[dict[str, Any]]:
    """Train every method with every seed, then valuate each run unless ``settings.shapley`` is False.

    Args:
        settings: the comparison.
        jobs: runs trained at the same time (see :func:`~brats_cggm.experiments.runs.run_comparison`);
            above 1, :func:`prepare_phantoms` first. The valuations run one after another.

    Returns:
        One row per run (method, seed, ``metrics.json``'s entries, ``schedule_overrides``), the
        Shapley values added to its ``validation``.
    """
    if jobs > 1:
        prepare_phantoms(settings)
    schedules = settings.scaled_schedules()
    overlays = {m: OVERLAY_DIR / f"{m}.yaml" for m in settings.methods}
    rows = run_comparison(
        BUNDLE_CONFIG, overlays, settings.seeds, settings.out_dir, settings.overrides(), jobs, schedules
    )
    device = settings.device
    if settings.shapley and device is None:
        device = str(resolve_device("auto"))
    for row in rows:
        if settings.shapley:
            run_dir = settings.out_dir / row["method"] / f"seed{row['seed']}"
            shapley = shapley_of_run(run_dir, settings.dataset_dir, row["seed"], settings.val_fraction, device)
            row["validation"] = {**row["validation"], **shapley}
        row["schedule_overrides"] = schedules.get(row["method"], {})
    return rows


def summary_markdown(rows: Sequence[dict[str, Any]], settings: ComparisonSettings) -> str:
    """``summary.md``: what ran, then Dice, auxiliary Dice and Shapley tables (mean ± std over seeds).

    Args:
        rows: :func:`run_and_valuate`'s rows.
        settings: the comparison they come from.

    Returns:
        The markdown text.
    """
    summary = summarize(rows, baseline=BASELINE)
    smoke = " (--smoke: tiny pipeline check, numbers meaningless)" if settings.smoke else ""
    text = [
        f"{len(settings.seeds)} seed(s) {settings.seeds}, {settings.max_epochs} epochs each, data "
        f"{settings.dataset_dir}{smoke}; mean ± std over seeds; "
        "validation Dice on whole volumes; step time = mean training iteration time relative to joint "
        "(forward, backward, optimizer steps; epoch-end work such as Re-learning's diagnosis is not in it).\n",
        markdown_table(summary, DICE_COLUMNS),
        "\nAuxiliary heads (per-modality Dice on the validation volumes):\n",
        markdown_table(summary, MODALITY_DICE_COLUMNS),
    ]
    if settings.shapley:
        text += [
            "\nShapley contribution of each modality to the mean Dice (validation cases, inputs of absent "
            "modalities zeroed):\n",
            markdown_table(summary, SHAPLEY_COLUMNS),
        ]
    scaled = {m: v for m, v in settings.scaled_schedules().items() if v}
    if scaled:
        text.append(f"\nSchedules scaled to the budget: {json.dumps(scaled)}\n")
    return "\n".join(text)
