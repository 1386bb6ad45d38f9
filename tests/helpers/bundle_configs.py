"""The bundle configs and overlay combinations the bundle tests parse, and the ids of a parsed config."""

from __future__ import annotations

from pathlib import Path

from monai.bundle import ConfigParser

REPO = Path(__file__).resolve().parents[2]
BRATS = REPO / "bundles" / "brats_cggm" / "configs"
MULTIMODAL = REPO / "bundles" / "multimodal_cggm" / "configs"

#: The workflow steps: parsing them runs the bundle (they are actions, not descriptions).
STEP_IDS = ("initialize", "run", "finalize")


def _overlays(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.yaml"))


def brats_config_sets() -> dict[str, list[Path]]:
    """Every config of the BraTS bundle, and train.yaml with each balancer, ablation and optimizer overlay."""
    sets = {
        "brats/train": [BRATS / "train.yaml"],
        "brats/multi_gpu_train": [BRATS / "train.yaml", BRATS / "multi_gpu_train.yaml"],
        "brats/inference": [BRATS / "inference.yaml"],
        "brats/evaluate": [BRATS / "inference.yaml", BRATS / "evaluate.yaml"],
    }
    for kind in ("balancers", "ablations", "optimizers"):
        for overlay in _overlays(REPO / "configs" / kind):
            sets[f"brats/train+{overlay.relative_to(REPO / 'configs').with_suffix('')}"] = [
                BRATS / "train.yaml",
                overlay,
            ]
    return sets


def multimodal_config_sets() -> dict[str, list[Path]]:
    """Every config of the multimodal bundle, alone and with each task overlay."""
    sets = {
        "multimodal/train": [MULTIMODAL / "train.yaml"],
        "multimodal/multi_gpu_train": [MULTIMODAL / "train.yaml", MULTIMODAL / "multi_gpu_train.yaml"],
        "multimodal/inference": [MULTIMODAL / "train.yaml", MULTIMODAL / "inference.yaml"],
    }
    for task in _overlays(REPO / "configs" / "tasks"):
        sets[f"multimodal/train+{task.stem}"] = [MULTIMODAL / "train.yaml", task]
        sets[f"multimodal/inference+{task.stem}"] = [MULTIMODAL / "train.yaml", task, MULTIMODAL / "inference.yaml"]
    return sets


def description_ids(parser: ConfigParser) -> list[str]:
    """Every id of a config (nested ones too) but the workflow steps and ``_meta_``, parents first."""
    ids: list[str] = []

    def visit(config: object, prefix: str) -> None:
        items = config.items() if isinstance(config, dict) else enumerate(config) if isinstance(config, list) else ()
        for key, value in items:
            id_ = f"{prefix}#{key}" if prefix else str(key)
            ids.append(id_)
            visit(value, id_)

    visit({k: v for k, v in parser.get().items() if k not in (*STEP_IDS, "_meta_")}, "")
    return ids


def read_configs(files: list[Path], **overrides: object) -> ConfigParser:
    """A parser of ``files`` (merged in order) with ``overrides`` set."""
    parser = ConfigParser()
    parser.read_config([str(f) for f in files])
    for key, value in overrides.items():
        parser[key] = value
    return parser
