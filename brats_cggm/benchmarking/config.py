"""What a benchmark run measures: the training-step configuration, the run's sizes, and the targets."""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["INFERENCE_SWEEP", "MODALITIES", "TARGETS", "BenchmarkConfig", "StepSpec", "benchmark_config"]

#: Upper bounds of the headline ratios on CPU with the default preset (see docs/performance.md).
TARGETS: dict[str, float] = {"cggm_time_ratio": 1.10, "cggm_mem_ratio": 1.05, "infer_ratio": 1.25, "load_ratio": 1.10}

#: The BraTS modalities in the network's input order.
MODALITIES: tuple[str, ...] = ("flair", "t1ce", "t1", "t2")


#: The inference_settings section's default grid (see
#: :func:`~brats_cggm.benchmarking.sections.inference_settings.parse_setting`): one factor at a time around the
#: reference, and the window/overlap pairs likely to be faster at the same Dice.
INFERENCE_SWEEP: tuple[str, ...] = (
    "window=2",
    "window=3",
    "window=whole",
    "overlap=0.25",
    "overlap=0",
    "blend=constant",
    "window=2,overlap=0.25",
    "window=2,overlap=0",
    "window=whole,overlap=0",
    "threads=1",
    "dtype=bf16",
    "channels_last",
    "compile",
    "backend=onnxruntime",
)


@dataclasses.dataclass
class StepSpec:
    """One training-step configuration.

    Attributes:
        preset: ``build_network`` preset (``"cpu"`` or ``"full"``).
        patch: training patch size.
        batch: patches per step.
        modalities: input modalities.
        balancer: registry name of the balancer.
        device: ``"cpu"`` or ``"cuda"``.
        amp: None (fp32), ``"bf16"`` or ``"fp16"`` (CUDA only).
        channels_last: convert the network and heads to ``torch.channels_last_3d``.
        compile: ``torch.compile`` the network's blocks and the heads.
        features: network widths replacing the preset's (tests use tiny ones).
        seed: seed of the weights and of the synthetic batch.
        optimizer: ``"adamw"`` (the bundle's) or ``"sgd"`` (the CGGM authors',
            ``configs/optimizers/sgd_paper.yaml``), for the network and the heads.
    """

    preset: str = "cpu"
    patch: tuple[int, ...] = (32, 32, 32)
    batch: int = 2
    modalities: tuple[str, ...] = MODALITIES
    balancer: str = "cggm"
    device: str = "cpu"
    amp: str | None = None
    channels_last: bool = False
    compile: bool = False
    features: tuple[int, ...] | None = None
    seed: int = 0
    optimizer: str = "adamw"

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict (also what the worker subprocesses receive)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StepSpec:
        """Inverse of :meth:`to_json`."""
        data = dict(data)
        for key in ("patch", "modalities", "features"):
            if data.get(key) is not None:
                data[key] = tuple(data[key])
        return cls(**data)


@dataclasses.dataclass
class BenchmarkConfig:
    """Sizes and repetitions of a benchmark run.

    Attributes:
        base: the step compared across balancers and data pipelines.
        balancers: balancer names; None = every registered one.
        warmup: untimed steps before the timed ones.
        rounds: alternation rounds (each runs ``block`` steps of every configuration).
        block: steps per configuration and round.
        memory: measure peak memory in subprocesses (off = no subprocess at all).
        memory_steps: training steps run by each memory subprocess.
        infer_shape: shape of the inference case.
        infer_roi: sliding-window size.
        infer_overlap: sliding-window overlap.
        infer_sw_batch: windows per forward pass.
        infer_reps: end-to-end and network-only repetitions (alternated).
        infer_folder_cases: phantom cases of the folder runs (0: none).
        infer_folder_shape: shape of the folder's phantom cases.
        infer_workers: loader workers of the pipelined folder run (``brats-cggm-infer --workers``).
        infer_candidate_roi: window of the candidate setting compared with the default (None: ``infer_roi``).
        infer_candidate_overlap: overlap of the candidate setting.
        infer_bundle: trained bundle whose weights and preprocessing the inference section uses (None: random
            weights of ``base``, and Dice values that only show the comparison runs).
        sweep_settings: the inference_settings section's grid, each a setting string of
            :func:`~brats_cggm.benchmarking.sections.inference_settings.parse_setting` (keys left out: the
            reference's).
        sweep_reference: the setting every other is compared with (``""``: today's inference: the training patch,
            the bundle's overlap, gaussian blending, the process's threads, fp32).
        sweep_data: labelled phantom folders the sweep segments (empty: ``sweep_cases`` fresh geometric phantoms of
            ``sweep_shape``).
        sweep_split: a ``split.json`` whose ``validation`` cases alone are used (None: every case).
        sweep_cases: cases per folder (the first ones).
        sweep_shape: shape of the fresh phantoms.
        sweep_rounds: timed rounds (each segments every case with every setting, in rotated order).
        data_shape: shape of the data-pipeline phantom cases.
        data_rounds: alternation rounds of loader epochs and preloaded blocks.
        data_workers: ``DataLoader`` workers (the bundle's ``num_workers``).
        scaling_patches: patch sizes of the patch-size curve.
        scaling_modalities: modality counts of the modality curve (at the base patch).
        scaling_reps: timed steps per scaling point.
        scaling_warmup: untimed steps before each scaling point.
        variants: speed-option variants at the base step (see
            :func:`~brats_cggm.benchmarking.sections.variants.variants_benchmark`).
        scale_cases: data-set sizes (cases) of the dataset_scale section's bundle runs, whose peaks make the
            memory line.
        scale_shape: shape of the dataset_scale section's phantom cases.
        scale_patches: patch sizes of the dataset_scale section's loader-speed comparison.
        scale_workers: ``DataLoader`` workers and cache-building processes there (None: every core).
        scale_build_cases: cases whose cache entries are built to time the build.
        scale_overrides: bundle keys the dataset_scale section's runs set on top of the default configuration.
        skipped: what this configuration leaves out, and why (reported in the JSON).
        bundle_config: the bundle's ``train.yaml`` whose loader the data-pipeline section measures; the
            command line finds the repository's own when not given (library code never guesses it).
    """

    base: StepSpec = dataclasses.field(default_factory=StepSpec)
    balancers: list[str] | None = None
    warmup: int = 1
    rounds: int = 3
    block: int = 1
    memory: bool = True
    memory_steps: int = 2
    infer_shape: tuple[int, int, int] = (240, 240, 155)
    infer_roi: tuple[int, int, int] = (64, 64, 64)
    infer_overlap: float = 0.5
    infer_sw_batch: int = 2
    infer_reps: int = 1
    infer_folder_cases: int = 8
    infer_folder_shape: tuple[int, int, int] = (240, 240, 155)
    infer_workers: int = 1
    infer_candidate_roi: tuple[int, int, int] | None = None
    infer_candidate_overlap: float = 0.0
    infer_bundle: str | None = None
    sweep_settings: list[str] = dataclasses.field(default_factory=lambda: list(INFERENCE_SWEEP))
    sweep_reference: str = ""
    sweep_data: list[str] = dataclasses.field(default_factory=list)
    sweep_split: str | None = None
    sweep_cases: int = 6
    sweep_shape: tuple[int, int, int] = (48, 48, 48)
    sweep_rounds: int = 3
    data_shape: tuple[int, int, int] = (240, 240, 155)
    data_rounds: int = 3
    data_workers: int = 0
    scaling_patches: list[tuple[int, int, int]] = dataclasses.field(default_factory=list)
    scaling_modalities: list[int] = dataclasses.field(default_factory=lambda: [2, 3, 4])
    scaling_reps: int = 2
    scaling_warmup: int = 1
    variants: list[str] = dataclasses.field(default_factory=lambda: ["default", "channels_last"])
    scale_cases: list[int] = dataclasses.field(default_factory=lambda: [6, 12, 24])
    scale_shape: tuple[int, int, int] = (240, 240, 155)
    scale_patches: list[tuple[int, int, int]] = dataclasses.field(default_factory=lambda: [(64,) * 3, (128,) * 3])
    scale_workers: int | None = None
    scale_build_cases: int = 4
    scale_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    skipped: list[str] = dataclasses.field(default_factory=list)
    bundle_config: str | None = None


def benchmark_config(
    device: str = "cpu", preset: str = "cpu", quick: bool = False, tiny: bool = False
) -> BenchmarkConfig:
    """The configuration the command line runs.

    Args:
        device: ``"cpu"`` or ``"cuda"``.
        preset: network preset, ``"cpu"`` or ``"full"``.
        quick: fewer repetitions and sizes (CPU: under 10 minutes on 2 cores).
        tiny: toy sizes for smoke tests (seconds; the numbers mean nothing).

    Returns:
        The configuration (``bundle_config`` unset).
    """
    cuda = device == "cuda"
    if tiny:
        base = StepSpec(preset=preset, patch=(16, 16, 16), batch=1, device=device, features=(4, 8))
        return BenchmarkConfig(
            base=base,
            balancers=["joint", "cggm"],
            warmup=1,
            rounds=1,
            memory=False,
            infer_shape=(40, 40, 32),
            infer_roi=(16, 16, 16),
            infer_overlap=0.25,
            infer_folder_shape=(32, 32, 24),
            sweep_settings=["window=2,overlap=0"],
            sweep_cases=1,
            sweep_shape=(32, 32, 24),
            sweep_rounds=1,
            data_shape=(40, 40, 32),
            data_rounds=1,
            scaling_patches=[(16, 16, 16)],
            scaling_modalities=[2],
            scaling_reps=1,
            variants=["default"],
            scale_cases=[2, 3],
            scale_shape=(40, 40, 32),
            scale_patches=[(16, 16, 16)],
            scale_workers=1,
            scale_build_cases=2,
            skipped=["tiny: toy sizes and a toy network; timings are meaningless"],
        )
    # The bundle trains the cpu preset on 32³ patches; the full preset is meant for 128³ on a GPU.
    patch = (128, 128, 128) if preset == "full" else (32, 32, 32)
    base = StepSpec(preset=preset, patch=patch, batch=2, device=device)
    config = BenchmarkConfig(base=base)
    config.infer_roi = (128, 128, 128) if preset == "full" else (64, 64, 64)
    config.infer_sw_batch = 4 if cuda else 2
    if cuda:
        config.variants = ["default", "bf16", "channels_last", "bf16+channels_last", "bf16+channels_last+compile"]
    config.scaling_patches = [(64, 64, 64), (96, 96, 96), (128, 128, 128)]
    if quick:
        config.rounds, config.warmup, config.memory_steps, config.scaling_reps = 3, 1, 1, 1
        config.data_rounds = 3
        if not cuda:
            config.scaling_patches = [(64, 64, 64), (96, 96, 96)]
            config.scaling_warmup = 0
            config.skipped.append("quick on CPU: the 128³ point of the patch-size curve is skipped")
            config.skipped.append("quick on CPU: each step_scaling point is one step without warm-up")
            config.infer_overlap = 0.25
            config.skipped.append("quick on CPU: inference uses sliding-window overlap 0.25 instead of 0.5")
            config.infer_folder_shape = (128, 128, 80)
            config.skipped.append("quick on CPU: the inference folder runs use 8 phantom cases of 128x128x80")
            config.scale_patches = [(64, 64, 64)]
            config.skipped.append("quick on CPU: the dataset_scale section's loader comparison runs at 64³ only")
            # validation's whole-volume buffers do not depend on the overlap; its time is ~6x smaller at 0
            config.scale_cases = [3, 6, 9]
            config.scale_overrides = {"sw_overlap": 0.0}
            config.skipped.append(
                "quick on CPU: the dataset_scale section's runs use 3, 6, 9 cases and validate with overlap 0"
            )
    else:
        config.rounds, config.block, config.warmup, config.scaling_reps = 5, 2, 2, 3
        config.infer_reps = 2
        config.data_rounds = 5
    return config
