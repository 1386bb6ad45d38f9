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

Methods: a name of ``configs/balancers`` is that overlay; a named method of ``method_overlays`` is a list of
overlays applied in order after the bundle's ``train.yaml`` (ablations: ``cggm-decoder`` =
``configs/balancers/cggm.yaml`` then ``configs/ablations/cggm/decoder.yaml``); its balancer (for the schedule
scaling and the rows' ``balancer``) is its first overlay's stem.

Data (phantoms only; :func:`run_phantoms` and :func:`held_out_phantoms` say which draw each run gets): with
``phantoms_per_seed``, the runs of seed k train on their own phantom set ``out_dir/phantoms/seed<k>`` whose
generator seed is ``s0 + PHANTOM_SEED_STRIDE · k`` (s0: the ``phantoms`` mapping's seed, 0 by default; case i of
that set is drawn from seed ``s0 + PHANTOM_SEED_STRIDE · k + i``), so seeds vary the data as well as the
initialisation; the run seed also chooses the validation cases (the bundle's split). With ``test_phantoms`` = N,
seed k also gets a held-out test set ``out_dir/test_phantoms/seed<k>`` of N phantoms with the same generator
settings and generator seed ``s0 + PHANTOM_SEED_STRIDE · k + TEST_SEED_OFFSET``: a seed range no training set
draws from (as long as sets have fewer than ``TEST_SEED_OFFSET`` cases), used for nothing but the ``test/``
columns (:func:`held_out_of_run`), never for training, validation or the budget.
"""

from __future__ import annotations

import ast
import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
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
    dice_key,
    gap_key,
    is_valuation_key,
    lesionwise_key,
    row_absence,
    shapley_key,
    subset_dice_key,
)
from brats_cggm.experiments.comparison_statistics import (
    DEFAULT_ALPHA,
    DEFAULT_FAMILY,
    DEFAULT_MARGIN,
    TEST_PREFIX,
    held_out_key,
)
from brats_cggm.experiments.runs import PlannedRun, short_run_overrides, train_planned_runs

__all__ = [
    "BASELINE",
    "OPTIMIZER_OVERLAYS",
    "PHANTOM_SEED_STRIDE",
    "ROW_FILE",
    "SMOKE_OVERRIDES",
    "TEST_FIELD",
    "TEST_SEED_OFFSET",
    "ComparisonProgress",
    "ComparisonSettings",
    "balancer_overlay",
    "bundle_config",
    "default_methods",
    "gap_of_run",
    "held_out_of_run",
    "held_out_phantoms",
    "lesionwise_of_run",
    "optimizer_overlay",
    "plan_runs",
    "prepare_phantoms",
    "run_and_valuate",
    "run_name",
    "run_phantoms",
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

#: Generator seeds of seed k's phantom sets start at ``s0 + PHANTOM_SEED_STRIDE · k`` (:func:`run_phantoms`).
PHANTOM_SEED_STRIDE = 100_000
#: A held-out test set's generator seed is its training set's plus this (:func:`held_out_phantoms`); no set may hold
#: more cases, so the two seed ranges never meet.
TEST_SEED_OFFSET = 50_000
#: A row's record of the held-out test set its ``test/`` columns were measured on (outside ``validation``).
TEST_FIELD = "test_set"

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
        extra_seeds: method → seeds it runs with besides ``seeds`` (e.g. five seeds for the key arms of a
            comparison whose other methods run three); the tests pair each method with joint over their common
            seeds.
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
        method_overlays: named method → its overlays, applied in order after the bundle's ``train.yaml``; a
            method of ``methods`` not named here is ``configs/balancers/<method>.yaml``.
        phantoms_per_seed: each seed's runs train on their own phantom draw (:func:`run_phantoms`).
        test_phantoms: the number of phantoms of each seed's held-out test set (:func:`held_out_phantoms`); 0: none.
        family: the metrics of the summary's tests (:mod:`~brats_cggm.experiments.comparison_statistics`).
        equivalence_margin: the TOST margin, in the metrics' units.
        alpha: the family-wise level of the tests.
    """

    out_dir: Path
    methods: Sequence[str] = field(default_factory=default_methods)
    seeds: Sequence[int] = (0, 1)
    extra_seeds: Mapping[str, Sequence[int]] = field(default_factory=dict)
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
    method_overlays: Mapping[str, Sequence[str | Path]] = field(default_factory=dict)
    phantoms_per_seed: bool = False
    test_phantoms: int = 0
    family: Sequence[str] = DEFAULT_FAMILY
    equivalence_margin: float = DEFAULT_MARGIN
    alpha: float = DEFAULT_ALPHA

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        self.methods, self.seeds, self.optimizers = list(self.methods), list(self.seeds), list(self.optimizers)
        unplanned = [name for name in self.extra_seeds if name not in self.methods]
        if unplanned:
            raise ValueError(f"extra seeds for {unplanned[0]!r}, which is not a method of the comparison")
        self.extra_seeds = {name: sorted(set(seeds) - set(self.seeds)) for name, seeds in self.extra_seeds.items()}
        if self.max_epochs < 1:
            raise ValueError(f"max_epochs must be at least 1, got {self.max_epochs}")
        check_absence(self.absent)
        unknown = [o for o in self.optimizers if o not in OPTIMIZER_OVERLAYS]
        if unknown:
            raise ValueError(f"unknown optimizer {unknown[0]!r}; choose from {sorted(OPTIMIZER_OVERLAYS)}")
        self.method_overlays = {name: tuple(files) for name, files in self.method_overlays.items()}
        self.family = list(self.family)
        if not self.equivalence_margin > 0.0 or not 0.0 < self.alpha < 1.0:
            raise ValueError(f"need a positive margin and 0 < alpha < 1, got {self.equivalence_margin}, {self.alpha}")
        if self.test_phantoms < 0 or self.test_phantoms >= TEST_SEED_OFFSET:
            raise ValueError(f"test_phantoms must be in [0, {TEST_SEED_OFFSET}), got {self.test_phantoms}")
        if self.phantoms_per_seed or self.test_phantoms:
            if not self.reads_phantoms():
                raise ValueError("phantoms per seed and test phantoms need runs that train on the bundle's phantoms")
            if any(seed < 0 for seed in self.all_seeds()):
                raise ValueError("phantoms per seed and test phantoms need seeds >= 0 (their generator seeds)")
            if self.phantoms_per_seed and "phantom_dir" in self.extra_overrides:
                raise ValueError("phantoms per seed go to <out_dir>/phantoms/seed<k>: do not override phantom_dir")
            if int(self.phantom_settings().get("n", 16)) >= TEST_SEED_OFFSET:
                raise ValueError(f"phantom sets of {TEST_SEED_OFFSET} cases or more would share generator seeds")

    def seeds_of(self, method: str) -> list[int]:
        """The seeds ``method`` runs with: :attr:`seeds`, then its :attr:`extra_seeds`."""
        return [*self.seeds, *self.extra_seeds.get(method, ())]

    def all_seeds(self) -> list[int]:
        """Every seed some run of the comparison has, in order of first appearance."""
        return list(dict.fromkeys([*self.seeds, *(seed for seeds in self.extra_seeds.values() for seed in seeds)]))

    def _shared_dataset_dir(self) -> str:
        overrides = self.overrides()
        return str(overrides.get("dataset_dir", overrides.get("phantom_dir", _bundle_defaults()["phantom_dir"])))

    def reads_phantoms(self) -> bool:
        """Whether the runs train on the bundle's phantom folder (not on a data set of their own)."""
        phantom_dir = Path(self.overrides().get("phantom_dir", _bundle_defaults()["phantom_dir"]))
        return Path(self._shared_dataset_dir()).resolve() == phantom_dir.resolve()

    def phantom_settings(self) -> dict[str, Any]:
        """The runs' ``phantoms`` mapping (generator settings), from the overrides or the bundle.

        Raises:
            ValueError: ``phantoms#<key>`` overrides (give the whole ``phantoms`` mapping instead).
        """
        overrides = self.overrides()
        if any(key.startswith("phantoms#") for key in overrides):
            raise ValueError("override the whole phantoms mapping, e.g. phantoms={'n': 8}, not one of its keys")
        phantoms = overrides.get("phantoms", _bundle_defaults()["phantoms"])
        if isinstance(phantoms, str):
            phantoms = ast.literal_eval(phantoms)  # how the bundle's command line reads it
        return dict(phantoms)

    def method_files(self, method: str) -> tuple[str | Path, ...]:
        """A method's overlays, in order (after the bundle's ``train.yaml``, before an optimiser's).

        Args:
            method: a name of ``methods``.

        Returns:
            Its overlays of ``method_overlays``, else ``(configs/balancers/<method>.yaml,)``.
        """
        return tuple(self.method_overlays.get(method, (balancer_overlay(method),)))

    def method_balancer(self, method: str) -> str:
        """The balancer a method trains with: its own name, or a named method's first overlay's stem.

        Args:
            method: a name of ``methods``.

        Returns:
            The balancer's name (the key of its schedule overrides and the rows' ``balancer``).
        """
        if method in self.method_overlays:
            return Path(self.method_overlays[method][0]).stem
        return method

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
        schedules = {}
        for method in self.methods:
            balancer = self.method_balancer(method)
            try:
                schedules[balancer] = short_run_overrides(balancer, self.max_epochs)
            except ValueError:
                if method not in self.method_overlays:
                    raise
                schedules[balancer] = {}  # a named method whose first overlay is no balancer of configs/balancers
        return schedules

    def run_overrides(self, seed: int) -> dict[str, Any]:
        """The bundle overrides of seed ``seed``'s runs: :meth:`overrides` and, with ``phantoms_per_seed``, the
        seed's phantom folder and generator settings (:func:`run_phantoms`)."""
        overrides = self.overrides()
        if self.phantoms_per_seed:
            folder, phantoms = run_phantoms(self, seed)
            overrides.update({"phantom_dir": str(folder), "phantoms": phantoms})
        return overrides

    def dataset_dir_of(self, seed: int) -> str:
        """Where the runs of seed ``seed`` read (or generate) their data."""
        return str(run_phantoms(self, seed)[0]) if self.phantoms_per_seed else self.dataset_dir

    @property
    def dataset_dir(self) -> str:
        """Where the runs read (or generate) their data; with ``phantoms_per_seed``, the folder the seeds'
        folders are in (:meth:`dataset_dir_of`)."""
        if self.phantoms_per_seed:
            return str(self.out_dir / "phantoms")
        return self._shared_dataset_dir()

    @property
    def val_fraction(self) -> float:
        """The bundle's validation share of the cases."""
        return float(self.overrides().get("val_fraction", _bundle_defaults()["val_fraction"]))


def run_phantoms(settings: ComparisonSettings, seed: int) -> tuple[Path, dict[str, Any]]:
    """The phantom folder and generator settings of seed ``seed``'s runs with ``phantoms_per_seed``.

    Args:
        settings: the comparison.
        seed: the run seed k.

    Returns:
        ``out_dir/phantoms/seed<k>`` and the runs' ``phantoms`` mapping with its ``seed`` s0 replaced by
        ``s0 + PHANTOM_SEED_STRIDE · k``.
    """
    phantoms = settings.phantom_settings()
    phantoms["seed"] = int(phantoms.get("seed", 0)) + PHANTOM_SEED_STRIDE * seed
    return settings.out_dir / "phantoms" / f"seed{seed}", phantoms


def held_out_phantoms(settings: ComparisonSettings, seed: int) -> tuple[Path, dict[str, Any]]:
    """The held-out test set of seed ``seed``: its folder and generator settings (``test_phantoms`` cases).

    Args:
        settings: the comparison (``test_phantoms`` > 0).
        seed: the run seed k.

    Returns:
        ``out_dir/test_phantoms/seed<k>`` and the runs' ``phantoms`` mapping with ``n`` = ``test_phantoms`` and
        ``seed`` = ``s0 + PHANTOM_SEED_STRIDE · k + TEST_SEED_OFFSET``.
    """
    phantoms = settings.phantom_settings()
    phantoms["seed"] = int(phantoms.get("seed", 0)) + PHANTOM_SEED_STRIDE * seed + TEST_SEED_OFFSET
    phantoms["n"] = settings.test_phantoms
    return settings.out_dir / "test_phantoms" / f"seed{seed}", phantoms


def _generate(folder: str | Path, phantoms: Mapping[str, Any]) -> Path:
    """Generate phantoms into ``folder`` unless it holds cases (the bundle's own call)."""
    from brats_cggm.brats.phantoms.dataset_dir import resolve_dataset_dir

    return resolve_dataset_dir(folder, folder, **phantoms)


def prepare_phantoms(settings: ComparisonSettings) -> Path | None:
    """Generate the runs' phantom data set now (each seed's, with ``phantoms_per_seed``), as each run's bundle
    would, unless it already holds cases.

    Runs trained at the same time would otherwise all start writing it, and a run that starts while
    another is writing would find a partial data set.

    Args:
        settings: the comparison; its ``phantoms`` override (a mapping, or its text as given on the
            command line) or the bundle's ``phantoms`` say what to generate.

    Returns:
        The phantom folder (the seeds' parent folder with ``phantoms_per_seed``), or None when the runs read
        another data set.

    Raises:
        ValueError: ``phantoms#<key>`` overrides (give the whole ``phantoms`` mapping instead).
    """
    if not settings.reads_phantoms():
        return None
    phantoms = settings.phantom_settings()
    if settings.phantoms_per_seed:
        for seed in settings.all_seeds():
            _generate(*run_phantoms(settings, seed))
        return Path(settings.dataset_dir)
    return _generate(settings.dataset_dir, phantoms)


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
    return _valuation_columns(summary)


def _valuation_columns(summary: Mapping[str, Any]) -> dict[str, float]:
    """The Shapley, robustness and subset Dice columns of a valuation's summary (``shapley.json``)."""
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
        The planned runs; ``info`` holds ``balancer``, ``optimizer``, ``modalities`` (None: all) and, for a named
        method, its ``overlays``. With ``phantoms_per_seed`` each run's overrides name its seed's phantoms.
    """
    schedules = settings.scaled_schedules()
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
                            {**settings.run_overrides(seed), "modalities": [modality]},
                            {"balancer": BASELINE, "optimizer": optimizer, "modalities": [modality]},
                        )
                    )
        for method in settings.methods:
            balancer = settings.method_balancer(method)
            info: dict[str, Any] = {"balancer": balancer, "optimizer": optimizer, "modalities": None}
            if method in settings.method_overlays:
                info["overlays"] = [str(f) for f in settings.method_overlays[method]]
            for seed in settings.seeds_of(method):
                planned.append(
                    PlannedRun(
                        run_name(method, optimizer),
                        seed,
                        (bundle, *settings.method_files(method), *optimizer_files),
                        {**settings.run_overrides(seed), **schedules.get(balancer, {})},
                        info,
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


def held_out_of_run(
    run_dir: Path,
    dataset_dir: str,
    seed: int,
    val_fraction: float,
    test_dir: Path,
    device: str,
    shapley: bool = True,
    absent: str = ABSENCE_MODES[0],
) -> dict[str, float]:
    """The run's last-epoch network on its held-out test set: whole-volume Dice, lesion-wise Dice and, with
    ``shapley``, the valuation's columns (Shapley values, robustness, subset Dice), each under its
    :func:`~brats_cggm.experiments.comparison_statistics.held_out_key` (``test/dice/mean``, ...).

    The same measurements as on the validation cases (:func:`lesionwise_of_run`, :func:`shapley_of_run`), on every
    case of ``test_dir``; the valuation's reports go to ``run_dir/test_valuation``.

    Args:
        run_dir: the run's ``output_dir``.
        dataset_dir: the data set the run trained on (its split is checked as for the validation measurements).
        seed: the run's seed.
        val_fraction: the run's validation share.
        test_dir: the held-out test set (:func:`held_out_phantoms`).
        device: where the network runs.
        shapley: also valuate the network (multimodal runs).
        absent: what an absent modality is in the valuation.

    Returns:
        ``test/...`` column → mean over the test cases.
    """
    from brats_cggm.brats.analysis.lesionwise import lesionwise_dice
    from brats_cggm.brats.analysis.runs import load_run, mean_dice, run_weights
    from brats_cggm.brats.data.discovery import discover_dataset
    from brats_cggm.brats.data.transforms import val_transforms

    run = load_run(run_dir, dataset_dir, seed, val_fraction, device, weights="last")
    cases = list(discover_dataset(test_dir, run.modalities, validate="none").items)
    run = dataclasses.replace(run, val_cases=cases)
    dice = mean_dice(run.network, cases, val_transforms(**run.options), run.inferer, device)
    values = {dice_key(region.lower()): float(v) for region, v in zip(("tc", "wt", "et", "mean"), dice)}
    values.update({lesionwise_key(region.lower()): v for region, v in lesionwise_dice(run, device).items()})
    if shapley:
        from brats_cggm.brats.analysis.valuation import valuate_bundle

        summary = valuate_bundle(
            run_dir,
            test_dir,
            run_dir / "test_valuation",
            checkpoint=run_weights(run_dir, "last"),
            device=device,
            overwrite=True,
            absent=absent,
        )
        values.update(_valuation_columns(summary))
    return {held_out_key(key): value for key, value in values.items()}


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
    before = (dict(validation), row.get(ABSENCE_FIELD), row.get(TEST_FIELD))
    validation.update(activity_columns(row))
    args = (settings.dataset_dir_of(run.seed), run.seed, settings.val_fraction, progress.device)
    if LESIONWISE_COLUMNS[0] not in validation:
        validation.update(lesionwise_of_run(run_dir, *args))
    multimodal = run.info.get("modalities") is None
    if multimodal and settings.shapley and row_absence(row) not in (None, settings.absent):
        # Valuated with the other definition (e.g. before 0.2): valuated again rather than mixed into one table.
        # The test set's columns are all measured again with the valuation (one test set, one definition).
        for key in [key for key in validation if is_valuation_key(key) or key.startswith(TEST_PREFIX)]:
            del validation[key]
    if multimodal and settings.shapley and not any(key.startswith(subset_dice_key("")) for key in validation):
        validation.update(shapley_of_run(run_dir, *args, absent=settings.absent))
        row[ABSENCE_FIELD] = settings.absent
    references = _unimodal_dirs(progress, run) if multimodal and settings.unimodal else None
    if references and not any(key in validation for key in GAP_COLUMNS):
        validation.update(gap_of_run(run_dir, references, *args))
    if settings.test_phantoms:
        _measure_test(settings, run, row, progress.device)
    if (validation, row.get(ABSENCE_FIELD), row.get(TEST_FIELD)) == before:
        return False
    write_json(run_dir / ROW_FILE, row)
    return True


def _measure_test(settings: ComparisonSettings, run: PlannedRun, row: dict[str, Any], device: str) -> None:
    """Add a run's ``test/`` columns unless its row has them for this test set (other ones are replaced).

    Args:
        settings: the comparison (``test_phantoms`` > 0).
        run: the run.
        row: its row; its :data:`TEST_FIELD` records the test set (folder, generator settings).
        device: where the network runs.
    """
    validation = row["validation"]
    test_dir, phantoms = held_out_phantoms(settings, run.seed)
    record = json.loads(json.dumps({"dir": str(test_dir), "phantoms": phantoms}))  # as read back from the row
    if row.get(TEST_FIELD) != record:
        for key in [key for key in validation if key.startswith(TEST_PREFIX)]:
            del validation[key]
    if any(key.startswith(TEST_PREFIX) for key in validation):
        return
    _generate(test_dir, phantoms)
    multimodal = run.info.get("modalities") is None
    validation.update(
        held_out_of_run(
            run.run_dir(settings.out_dir),
            settings.dataset_dir_of(run.seed),
            run.seed,
            settings.val_fraction,
            test_dir,
            device,
            shapley=multimodal and settings.shapley,
            absent=settings.absent,
        )
    )
    row[TEST_FIELD] = record


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
    row["schedule_overrides"] = progress.schedules.get(run.info.get("balancer", run.name), {})  # by balancer
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
