"""``configs/optimizers/sgd_paper.yaml``: the CGGM authors' SGD and schedule on the BraTS bundle, one tiny run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigWorkflow

from brats_cggm.core.events import read_scalars

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "bundles" / "brats_cggm" / "configs"
OVERLAY = REPO / "configs" / "optimizers" / "sgd_paper.yaml"


def _logged_learning_rates(log_dir: Path) -> dict[int, float]:
    return dict(read_scalars(log_dir).get("train/lr", []))


def test_overlay_builds_sgd_and_trains(tmp_path: Path) -> None:
    workflow = ConfigWorkflow(
        config_file=[str(CONFIGS / "train.yaml"), str(OVERLAY)],
        meta_file=str(CONFIGS / "metadata.json"),
        logging_file=str(CONFIGS / "logging.conf"),
        workflow_type="train",
        phantom_dir=str(tmp_path / "phantoms"),
        output_dir=str(tmp_path / "out"),
        phantoms={"n": 5, "shape": [32, 32, 32], "seed": 0},
        patch_size=[16, 16, 16],
        num_samples=1,
        batch_size=1,
        sw_batch_size=2,
        max_epochs=2,
        warmup_epochs=1,
        val_interval=2,
        device="cpu",
        **{"network_def#features": [4, 8, 16]},
    )
    workflow.initialize()
    for name in ("optimizer", "aux_optimizer"):
        optimizer = workflow.parser.get_parsed_content(name)
        assert isinstance(optimizer, torch.optim.SGD), name
        group = optimizer.param_groups[0]
        assert group["momentum"] == 0.9 and group["weight_decay"] == 3e-4, name
    assert workflow.parser.get_parsed_content("aux_optimizer").param_groups[0]["lr"] == 6e-3
    steps_per_epoch = len(workflow.parser.get_parsed_content("train#dataloader"))
    assert steps_per_epoch == 4  # 5 cases, one of them for validation, batch 1
    workflow.run()
    workflow.finalize()
    # train/lr at iteration k is the rate after k scheduler steps: warm-up 4 iterations from 4e-4 to 1e-2,
    # then a cosine over 4 iterations to 1e-3.
    rates = _logged_learning_rates(tmp_path / "out")
    assert sorted(rates) == list(range(1, 9))
    assert rates[3] == pytest.approx(4e-4 + (1e-2 - 4e-4) * 3 / 3)  # the last warm-up iteration: the base rate
    assert rates[6] == pytest.approx(1e-3 + 0.5 * 9e-3 * (1 + math.cos(math.pi * 2 / 4)), rel=1e-5)
    assert rates[8] == pytest.approx(1e-3, rel=1e-5)  # the end of the run: the final rate, not zero
    optimizer = workflow.parser.get_parsed_content("optimizer")
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["iteration"] == 8 and 0.0 <= metrics["validation"]["val/dice/mean"] <= 1.0
