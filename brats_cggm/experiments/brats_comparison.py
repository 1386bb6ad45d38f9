"""Every balancing method on the BraTS bundle, same seeds and budget: Dice, auxiliary Dice, Shapley values.

The bundle (``bundles/brats_cggm``, phantoms by default) is trained once per method overlay
(``configs/balancers/<method>.yaml``) and seed by :func:`~brats_cggm.experiments.runs.train_planned_runs`;
each run's last-epoch network (the one its reported Dice comes from) is then scored lesion-wise and valuated with
:func:`brats_cggm.brats.analysis.valuation.valuate_bundle` on that run's validation cases (Shapley contribution of each
modality to the mean Dice), and :func:`summary_markdown` tabulates the rows. What an absent modality is in that
valuation is ``ComparisonSettings.absent`` (``--absent``: ``mask``, the network's availability mask, by default;
``zero-input`` for the figures before 0.2); each row records it (``absent``) and a resumed row valuated with
the other definition is valuated again rather than mixed into one table.

Budget: ``max_epochs`` for every method, validation at the end (``val_interval = max_epochs`` unless overridden).
The methods' epoch schedules are scaled to the budget by
:func:`~brats_cggm.experiments.runs.short_run_overrides` unless ``paper_schedules``.

Axes: the balancing methods, the seeds, the optimisers (``adamw``: the bundle's AdamW; ``sgd``: the CGGM
authors' SGD and schedule, ``configs/optimizers/sgd_paper.yaml``) and, with ``unimodal``, one joint run per
modality on that modality alone (per seed and optimiser), from which each multimodal run's encoder gap is
measured (:func:`brats_cggm.brats.analysis.diagnostics.diagnose_run`). Each run's complete row (metrics, Shapley values,
missing-modality robustness, lesion-wise Dice, encoder gaps) is saved in its folder as ``comparison_row.json``
as soon as each is measured (a run's gaps once its unimodal runs are done), so a comparison run again with
``resume`` reuses finished runs and diagnostics and trains and measures only what is missing.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache, partial
from pathlib import Path
from typing import Any

from brats_cggm.brats.analysis.absence import ABSENCE_MODES, check_absence
from brats_cggm.brats.data.discovery import DEFAULT_MODALITIES
from brats_cggm.core import resources
from brats_cggm.core.devices import resolve_device
from brats_cggm.core.files import write_json
from brats_cggm.experiments.comparison_columns import (
    ABSENCE_FIELD,
    GAP_COLUMNS,
    LESIONWISE_COLUMNS,
    ROBUSTNESS_COLUMNS,
    activity_columns,
    gap_key,
    is_valuation_key,
    lesionwise_key,
    row_absence,
    shapley_key,
    subset_dice_key,
)
from brats_cggm.experiments.runs import PlannedRun, short_run_overrides, train_planned_runs

__all__ = [
    "BASELINE",
    "OPTIMIZER_OVERLAYS",
    "ROW_FILE",
    "SMOKE_OVERRIDES",
    "ComparisonProgress",
    "ComparisonSettings",
    "balancer_overlay",
    "bundle_config",
    "default_methods",
    "gap_of_run",
    "lesionwise_of_run",
    "optimizer_overlay",
    "plan_runs",
    "prepare_phantoms",
    "run_and_valuate",
    "run_name",
    "shapley_of_run",
]

#: The method step times are relative to, listed first.
BASELINE = "joint"
#: Optimiser name → its overlay below ``configs/`` (None: the bundle's own AdamW); see :func:`optimizer_overlay`.
OPTIMIZER_OVERLAYS: dict[str, str | None] = {
    "adamw": None,
    "sgd": "optimizers/sgd_paper.yaml",
}
#: The optimiser whose runs keep the plain method names.
DEFAULT_OPTIMIZER = "adamw"
#: A finished run's complete row (metrics and diagnostics), in its folder; what ``resume`` reuses.
ROW_FILE = "comparison_row.json"

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


def bundle_config() -> Path:
    """The bundle every method is trained with: ``bundles/brats_cggm/configs/train.yaml``, checkout or installed."""
    return resources.bundle_config("brats_cggm", "train.yaml")


def balancer_overlay(method: str) -> Path:
    """The overlay of a method: ``configs/balancers/<method>.yaml``, checkout or installed."""
    return resources.config_path("balancers", f"{method}.yaml")


def optimizer_overlay(optimizer: str) -> Path | None:
    """The overlay of a name of :data:`OPTIMIZER_OVERLAYS` (None: the bundle's own AdamW)."""
    relative = OPTIMIZER_OVERLAYS[optimizer]
    return None if relative is None else resources.config_path(*relative.split("/"))


def default_methods() -> list[str]:
    """Every balancer overlay (``configs/balancers/*.yaml``: the registered balancers and the ``dropout``
    baseline, joint training with the missing-modality option), the baseline first."""
    names = [path.stem for path in resources.config_path("balancers").glob("*.yaml")]
    return sorted(names, key=lambda name: (name != BASELINE, name))


@cache
def _bundle_defaults() -> dict[str, Any]:
    import yaml

    return yaml.safe_load(bundle_config().read_text())


@dataclass
class ComparisonSettings:
    """One comparison: which runs, under which budget, into which folder.

    Attributes:
        out_dir: each run goes to ``out_dir/<method>/seed<k>``; the reports to ``out_dir``.
        methods: method names, each an overlay (:func:`balancer_overlay`).
        seeds: the seeds of every method.
        max_epochs: the budget of every run; validation runs once, after the last epoch.
        device: training and valuation device (e.g. ``cuda:0``); None: the bundle's for training, and CUDA
            when available for the valuation.
        paper_schedules: keep the overlays' epoch schedules instead of scaling them to ``max_epochs``.
        shapley: valuate every run's network.
        smoke: tiny phantoms and network (:data:`SMOKE_OVERRIDES`), written to ``out_dir/phantoms``.
        extra_overrides: bundle overrides for every run, applied after the others (e.g. ``dataset_dir``).
        optimizers: names of :data:`OPTIMIZER_OVERLAYS`; every method runs with each. The runs of an optimiser
            other than ``adamw`` are named ``<method>-<optimizer>``.
        unimodal: also train the joint method on each modality alone (``unimodal-<m>[-<optimizer>]``) per seed
            and optimiser, and measure each multimodal run's encoder gaps against them.
        resume: reuse the finished runs found in ``out_dir`` (their ``comparison_row.json``, else their
            ``metrics.json``).
        absent: what an absent modality is in the valuation, one of
            :data:`~brats_cggm.brats.analysis.absence.ABSENCE_MODES`.
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
    optimizers: Sequence[str] = (DEFAULT_OPTIMIZER,)
    unimodal: bool = False
    resume: bool = False
    absent: str = ABSENCE_MODES[0]

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        self.methods, self.seeds, self.optimizers = list(self.methods), list(self.seeds), list(self.optimizers)
        if self.max_epochs < 1:
            raise ValueError(f"max_epochs must be at least 1, got {self.max_epochs}")
        check_absence(self.absent)
        unknown = [o for o in self.optimizers if o not in OPTIMIZER_OVERLAYS]
        if unknown:
            raise ValueError(f"unknown optimizer {unknown[0]!r}; choose from {sorted(OPTIMIZER_OVERLAYS)}")

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
    from brats_cggm.brats.phantoms.dataset_dir import resolve_dataset_dir

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
    from brats_cggm.brats.data.discovery import discover_dataset
    from brats_cggm.brats.data.splits import split_datalist

    spec = discover_dataset(dataset_dir, DEFAULT_MODALITIES, validate="none")
    return [str(item["case_id"]) for item in split_datalist(spec.items, val_fraction=val_fraction, seed=seed)[1]]


def shapley_of_run(
    run_dir: Path, dataset_dir: str, seed: int, val_fraction: float, device: str, absent: str = ABSENCE_MODES[0]
) -> dict[str, float]:
    """Each modality's mean Shapley contribution to the mean Dice over the run's validation cases, and the run's
    missing-modality robustness: the mean Dice of the 15 non-empty modality subsets (the others absent),
    averaged over the subsets (``robustness/mean_subsets``) and the lowest (``robustness/worst_subset``).

    The run's ``output_dir`` is the bundle (its ``configs/inference.json``); the weights are its last epoch's
    (``models/checkpoint.pt``), whose validation Dice the comparison reports. The valuation's reports go to
    ``run_dir/valuation``.

    Args:
        run_dir: the run's ``output_dir``.
        dataset_dir: the data set the run trained on.
        seed: the run's seed (it chose the validation cases).
        val_fraction: the run's validation share.
        device: where the network runs.
        absent: what an absent modality is (:data:`~brats_cggm.brats.analysis.absence.ABSENCE_MODES`); the
            caller records it in the row.

    Returns:
        :func:`shapley_key` → mean contribution, one per modality, the :data:`ROBUSTNESS_COLUMNS` and
        :func:`subset_dice_key` → mean Dice, one per non-empty subset.
    """
    from brats_cggm.brats.analysis.runs import run_weights
    from brats_cggm.brats.analysis.valuation import valuate_bundle

    summary = valuate_bundle(
        run_dir,
        dataset_dir,
        run_dir / "valuation",
        checkpoint=run_weights(run_dir, "last"),
        device=device,
        case_ids=_validation_case_ids(dataset_dir, seed, val_fraction),
        overwrite=True,  # the run was just trained into this folder
        absent=absent,
    )
    values = {shapley_key(m): summary["shapley"][m]["mean"] for m in summary["modalities"]}
    present = {subset: dice["mean"] for subset, dice in summary["subset_dice"].items() if subset != "none"}
    values[ROBUSTNESS_COLUMNS[0]] = sum(present.values()) / len(present)
    values[ROBUSTNESS_COLUMNS[1]] = min(present.values())
    values.update({subset_dice_key(subset): dice for subset, dice in present.items()})
    return values


def run_name(base: str, optimizer: str) -> str:
    """The name of a run of ``base`` (a method, ``unimodal-<m>``) with ``optimizer``.

    Args:
        base: the run's name with the default optimiser.
        optimizer: its optimiser.

    Returns:
        ``base``, or ``base-<optimizer>`` for another optimiser than :data:`DEFAULT_OPTIMIZER`.
    """
    return base if optimizer == DEFAULT_OPTIMIZER else f"{base}-{optimizer}"


def plan_runs(settings: ComparisonSettings) -> list[PlannedRun]:
    """The comparison's runs: the unimodal ones first (their encoders are the gaps' reference), then every method
    with every optimiser and seed.

    Args:
        settings: the comparison.

    Returns:
        The planned runs; ``info`` holds ``balancer``, ``optimizer`` and ``modalities`` (None: all).
    """
    schedules = settings.scaled_schedules()
    shared = settings.overrides()
    planned = []
    for optimizer in settings.optimizers:
        overlay = optimizer_overlay(optimizer)
        optimizer_files = [overlay] if overlay is not None else []
        bundle = bundle_config()
        if settings.unimodal:
            joint = balancer_overlay(BASELINE)
            for modality in DEFAULT_MODALITIES:
                for seed in settings.seeds:
                    planned.append(
                        PlannedRun(
                            run_name(f"unimodal-{modality}", optimizer),
                            seed,
                            (bundle, joint, *optimizer_files),
                            {**shared, "modalities": [modality]},
                            {"balancer": BASELINE, "optimizer": optimizer, "modalities": [modality]},
                        )
                    )
        for method in settings.methods:
            for seed in settings.seeds:
                planned.append(
                    PlannedRun(
                        run_name(method, optimizer),
                        seed,
                        (bundle, balancer_overlay(method), *optimizer_files),
                        {**shared, **schedules.get(method, {})},
                        {"balancer": method, "optimizer": optimizer, "modalities": None},
                    )
                )
    return planned


def lesionwise_of_run(run_dir: Path, dataset_dir: str, seed: int, val_fraction: float, device: str) -> dict[str, float]:
    """The BraTS lesion-wise Dice of the run's last-epoch network on its validation cases.

    See :func:`brats_cggm.brats.analysis.lesionwise.lesionwise_dice`.

    Args:
        run_dir: the run's ``output_dir``.
        dataset_dir: the data set the run trained on.
        seed: the run's seed (it chose the validation cases).
        val_fraction: the run's validation share.
        device: where the network runs.

    Returns:
        :func:`lesionwise_key` → mean over the cases, per region and for their mean.
    """
    from brats_cggm.brats.analysis.lesionwise import lesionwise_dice
    from brats_cggm.brats.analysis.runs import load_run

    run = load_run(run_dir, dataset_dir, seed, val_fraction, device, weights="last")
    return {lesionwise_key(region.lower()): value for region, value in lesionwise_dice(run, device).items()}


#: The unimodal runs' probes and Dice, measured once per process: every multimodal run of an optimiser and seed is
#: compared with the same ones.
_UNIMODAL_REFERENCES: dict = {}


def gap_of_run(
    run_dir: Path, unimodal_dirs: dict[str, Path], dataset_dir: str, seed: int, val_fraction: float, device: str
) -> dict[str, float]:
    """Each modality's encoder gap of a multimodal run (:func:`brats_cggm.brats.analysis.diagnostics.diagnose_run`).

    The run's diagnostics (JSON and markdown) go to ``run_dir/diagnostics``.

    Args:
        run_dir: the multimodal run's ``output_dir``.
        unimodal_dirs: modality → the unimodal run of the same seed and optimiser.
        dataset_dir: the data set the runs trained on.
        seed: the runs' seed.
        val_fraction: the runs' validation share.
        device: where to compute.

    Returns:
        :func:`gap_key` → gap, one per modality of ``unimodal_dirs``.
    """
    from brats_cggm.brats.analysis.diagnostics import diagnose_run
    from brats_cggm.brats.analysis.diagnostics_report import write_diagnostics_report

    report = diagnose_run(
        run_dir,
        dataset_dir,
        unimodal_dirs,
        seed,
        val_fraction,
        device,
        shapley=False,
        weights="last",
        reference_cache=_UNIMODAL_REFERENCES,
        lesionwise=False,  # measured by lesionwise_of_run
    )
    write_diagnostics_report([report], run_dir / "diagnostics", overwrite=True, plots=False)
    return {gap_key(m): entry["gap"] for m, entry in report["encoder_gap"].items()}


def _read_row(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / ROW_FILE
    return json.loads(path.read_text()) if path.is_file() else None


@dataclass
class ComparisonProgress:
    """What :func:`run_and_valuate` has done so far: the plan and the rows of the runs finished.

    Attributes:
        settings: the comparison.
        planned: its runs, in plan order (:func:`plan_runs`).
        device: where the measurements run.
        schedules: each balancer's schedule overrides (:meth:`ComparisonSettings.scaled_schedules`).
        on_row: called with the rows done so far (in plan order) whenever one is added or completed.
        rows: plan position → the row of a finished run.
    """

    settings: ComparisonSettings
    planned: list[PlannedRun]
    device: str
    schedules: dict[str, dict[str, Any]]
    on_row: Callable[[list[dict[str, Any]]], None] | None = None
    rows: dict[int, dict[str, Any]] = field(default_factory=dict)

    def position(self, name: str, seed: int) -> int | None:
        """The plan position of the run ``name`` with ``seed``, or None if it is not planned.

        Args:
            name: the run's name.
            seed: its seed.

        Returns:
            Its index in :attr:`planned`.
        """
        for i, run in enumerate(self.planned):
            if run.name == name and run.seed == seed:
                return i
        return None

    def done_rows(self) -> list[dict[str, Any]]:
        """The rows of the finished runs, in plan order.

        Returns:
            The rows.
        """
        return [self.rows[i] for i in sorted(self.rows)]


def _publish(progress: ComparisonProgress) -> None:
    """Hand the rows done so far to ``progress.on_row``, if any.

    Args:
        progress: the comparison's progress.
    """
    if progress.on_row is not None:
        progress.on_row(progress.done_rows())


def _unimodal_dirs(progress: ComparisonProgress, run: PlannedRun) -> dict[str, Path] | None:
    """The folders of a multimodal run's unimodal references (same optimiser and seed), once all are done.

    Args:
        progress: the comparison's progress.
        run: a multimodal run.

    Returns:
        Modality → run folder, or None while one of them is not finished.
    """
    names = {m: run_name(f"unimodal-{m}", run.info["optimizer"]) for m in DEFAULT_MODALITIES}
    if not all(progress.position(name, run.seed) in progress.rows for name in names.values()):
        return None
    return {m: PlannedRun(name, run.seed, ()).run_dir(progress.settings.out_dir) for m, name in names.items()}


def _measure(progress: ComparisonProgress, position: int) -> bool:
    """Add a finished run's missing measurements to its row and save the row if any was added.

    Args:
        progress: the comparison's progress.
        position: the run's plan position (its row is in ``progress.rows``).

    Returns:
        Whether anything was added.
    """
    settings, run = progress.settings, progress.planned[position]
    row, run_dir = progress.rows[position], run.run_dir(settings.out_dir)
    validation = row["validation"]
    before = (dict(validation), row.get(ABSENCE_FIELD))
    validation.update(activity_columns(row))
    args = (settings.dataset_dir, run.seed, settings.val_fraction, progress.device)
    if LESIONWISE_COLUMNS[0] not in validation:
        validation.update(lesionwise_of_run(run_dir, *args))
    multimodal = run.info.get("modalities") is None
    if multimodal and settings.shapley and row_absence(row) not in (None, settings.absent):
        # Valuated with the other definition (e.g. before 0.2): valuated again rather than mixed into one table.
        for key in [key for key in validation if is_valuation_key(key)]:
            del validation[key]
    if multimodal and settings.shapley and not any(key.startswith(subset_dice_key("")) for key in validation):
        validation.update(shapley_of_run(run_dir, *args, absent=settings.absent))
        row[ABSENCE_FIELD] = settings.absent
    references = _unimodal_dirs(progress, run) if multimodal and settings.unimodal else None
    if references and not any(key in validation for key in GAP_COLUMNS):
        validation.update(gap_of_run(run_dir, references, *args))
    if (validation, row.get(ABSENCE_FIELD)) == before:
        return False
    write_json(run_dir / ROW_FILE, row)
    return True


def _measure_all(progress: ComparisonProgress) -> None:
    """:func:`_measure` every finished run, publishing after each that gained a measurement.

    Args:
        progress: the comparison's progress.
    """
    for position in sorted(progress.rows):
        if _measure(progress, position):
            _publish(progress)


def _finish(progress: ComparisonProgress, run: PlannedRun, row: dict[str, Any]) -> None:
    """Take in a run that has just trained: record its row, measure it, save the row and publish.

    Args:
        progress: the comparison's progress.
        run: the run.
        row: its row (:func:`~brats_cggm.experiments.runs.train_planned_runs`).
    """
    position = progress.position(run.name, run.seed)
    if position is None:
        raise ValueError(f"run {run.name} seed {run.seed} is not in the comparison's plan")
    row["schedule_overrides"] = progress.schedules.get(run.info.get("balancer", run.name), {})
    progress.rows[position] = row
    if not _measure(progress, position):
        write_json(run.run_dir(progress.settings.out_dir) / ROW_FILE, row)
    _publish(progress)


def run_and_valuate(
    settings: ComparisonSettings, jobs: int = 1, on_row: Callable[[list[dict[str, Any]]], None] | None = None
) -> list[dict[str, Any]]:
    """Train every planned run and measure what its metrics do not hold: the lesion-wise Dice of every run and,
    for each multimodal run, the Shapley values and missing-modality robustness (unless ``settings.shapley`` is
    False) and, with ``settings.unimodal``, its encoder gaps, as soon as its unimodal runs are done.

    Each run's row is saved as ``ROW_FILE`` in its folder whenever something was added; with ``settings.resume``
    those rows are reused (and completed), and runs with a ``metrics.json`` are not trained again.

    Args:
        settings: the comparison.
        jobs: runs trained at the same time (see :func:`~brats_cggm.experiments.runs.train_planned_runs`);
            above 1, :func:`prepare_phantoms` first. The measurements run one after another.
        on_row: called after every finished run or diagnostic with the rows complete so far (in plan order),
            e.g. to rewrite the reports.

    Returns:
        One row per run (``method`` = the run's name, ``seed``, ``balancer``, ``optimizer``, ``modalities``,
        ``metrics.json``'s entries, ``schedule_overrides``), the measurements added to its ``validation``.
    """
    if jobs > 1:
        prepare_phantoms(settings)
    progress = ComparisonProgress(
        settings,
        plan_runs(settings),
        settings.device or str(resolve_device("auto")),
        settings.scaled_schedules(),
        on_row,
    )
    to_train = []
    for position, run in enumerate(progress.planned):
        row = _read_row(run.run_dir(settings.out_dir)) if settings.resume else None
        if row is None:
            to_train.append(run)
        else:
            progress.rows[position] = row
    _measure_all(progress)
    if progress.rows:
        _publish(progress)
    train_planned_runs(to_train, settings.out_dir, jobs, settings.resume, partial(_finish, progress))
    # Runs finished before their unimodal references (several jobs) get their gaps now.
    _measure_all(progress)
    return progress.done_rows()
