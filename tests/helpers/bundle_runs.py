"""Tiny real training runs of the BraTS bundle, for fixtures that need a run's ``output_dir``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "bundles" / "brats_cggm" / "configs"

#: Constructor overrides of the tiny random network (sliding window multiple of 4).
TINY_FEATURES = (4, 8, 16)


def train_tiny_run(output_dir: Path, dataset_dir: Path, overlays: tuple[str, ...] = (), **overrides: Any) -> Path:
    """One epoch of ``train.yaml`` (plus ``overlays``, paths relative to the repository) on ``dataset_dir``.

    The network has widths :data:`TINY_FEATURES`; 32³ patches and sliding window; ``overrides`` are
    further bundle keys (they may replace these settings, e.g. ``max_epochs``).

    Returns:
        ``output_dir``.
    """
    from monai.bundle import ConfigWorkflow

    settings: dict[str, Any] = {
        "device": "cpu",
        "max_epochs": 1,
        "val_interval": 1,
        "patch_size": [32, 32, 32],
        "num_samples": 1,
        "sw_batch_size": 1,
        "network_def#features": list(TINY_FEATURES),
    }
    workflow = ConfigWorkflow(
        config_file=[str(CONFIGS / "train.yaml"), *(str(REPO / o) for o in overlays)],
        meta_file=str(CONFIGS / "metadata.json"),
        logging_file=str(CONFIGS / "logging.conf"),
        workflow_type="train",
        dataset_dir=str(dataset_dir),
        output_dir=str(output_dir),
        **(settings | overrides),
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    return output_dir


def error_messages(error: BaseException | None) -> str:
    """The messages of an exception and of every exception it was raised from or during, one per line
    (a bundle workflow wraps the error it met, so the cause holds the message a user reads)."""
    text = ""
    while error is not None:
        text += f"{error}\n"
        error = error.__cause__ or error.__context__
    return text
