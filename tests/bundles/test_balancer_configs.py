"""The bundles' default balancer, the task overlays and the balancer overlays build the balancers they built
before CGGM's block was reduced to its wiring (its settings are CGGMBalancer's defaults, defined once)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from monai.bundle import ConfigParser

import brats_cggm.balancing  # noqa: F401  (registers the balancers the configs name)

REPO = Path(__file__).resolve().parents[2]
BRATS = "bundles/brats_cggm/configs/train.yaml"
MULTIMODAL = "bundles/multimodal_cggm/configs/train.yaml"
CGGM_OVERLAY = "configs/balancers/cggm.yaml"
CGGM_SETTINGS = ("rho", "lam", "direction", "s_min", "clamp", "ema", "start_epoch")
#: CGGM's settings as the configs built them before (rho and lambda: the paper's per data set)
PAPER_CGGM = {"direction": "grad", "s_min": 1e-4, "clamp": True, "ema": 0.0, "start_epoch": 0}
BRATS_CGGM = {"rho": 1.0, "lam": 0.1, **PAPER_CGGM}
TASKS = {
    "food101": ((("text", "image")), {"rho": 1.3, "lam": 0.05, **PAPER_CGGM}),
    "iemocap": (("text", "audio", "vision"), {"rho": 1.3, "lam": 0.2, **PAPER_CGGM}),
    "mosi": (("text", "audio", "vision"), {"rho": 1.3, "lam": 0.2, **PAPER_CGGM}),
}


def _balancer(*files: str):
    parser = ConfigParser()
    parser.read_config([str(REPO / f) for f in files])
    return parser.get_parsed_content("balancer")


def _cggm_settings(balancer) -> dict:
    assert type(balancer).__name__ == "CGGMBalancer"
    return {key: getattr(balancer, key) for key in CGGM_SETTINGS}


@pytest.mark.parametrize("files", [(BRATS,), (BRATS, CGGM_OVERLAY)], ids=["default", "overlay"])
def test_brats_bundle_builds_the_same_cggm(files: tuple[str, ...]):
    balancer = _balancer(*files)
    assert _cggm_settings(balancer) == BRATS_CGGM
    assert balancer.modalities == ("flair", "t1ce", "t1", "t2")


@pytest.mark.parametrize("task", sorted(TASKS))
@pytest.mark.parametrize("overlay", [(), (CGGM_OVERLAY,)], ids=["default", "overlay"])
def test_task_overlays_build_the_same_cggm(task: str, overlay: tuple[str, ...]):
    modalities, expected = TASKS[task]
    balancer = _balancer(MULTIMODAL, f"configs/tasks/{task}.yaml", *overlay)
    assert _cggm_settings(balancer) == expected and balancer.modalities == modalities


@pytest.mark.parametrize("bundle", [BRATS, MULTIMODAL])
def test_balancer_overlays_replace_the_default(bundle: str):
    extra = ["configs/tasks/mosi.yaml"] if bundle == MULTIMODAL else []
    for overlay in sorted((REPO / "configs" / "balancers").glob("*.yaml")):
        name = overlay.stem
        balancer = _balancer(bundle, *extra, f"configs/balancers/{overlay.name}")
        # the dropout baseline is joint training with the missing-modality option, not a balancer
        assert balancer.name == ("joint" if name == "dropout" else name)


@pytest.mark.parametrize("bundle", [BRATS, MULTIMODAL])
def test_the_dropout_overlay_turns_on_missing_modality_training_in_both_bundles(bundle: str):
    extra = ["configs/tasks/mosi.yaml"] if bundle == MULTIMODAL else []
    parser = ConfigParser()
    parser.read_config([str(REPO / f) for f in (bundle, *extra)])
    assert parser.get_parsed_content("modality_dropout_sampler").p == 0.0  # off by default
    parser = ConfigParser()
    parser.read_config([str(REPO / f) for f in (bundle, *extra, "configs/balancers/dropout.yaml")])
    assert parser.get_parsed_content("modality_dropout_sampler").p == 0.25


def test_cggm_block_is_the_same_everywhere_and_holds_no_settings():
    block = yaml.safe_load((REPO / CGGM_OVERLAY).read_text())["balancer"]
    assert set(block) == {"_target_", "modalities", "rho", "lam"}
    for bundle in (BRATS, MULTIMODAL):
        assert yaml.safe_load((REPO / bundle).read_text())["balancer"] == block, bundle
    for task in TASKS:
        assert "balancer" not in yaml.safe_load((REPO / "configs" / "tasks" / f"{task}.yaml").read_text()), task


def test_a_setting_is_still_one_override_away():
    parser = ConfigParser()
    parser.read_config(str(REPO / BRATS))
    parser["balancer#s_min"], parser["balancer#clamp"] = 0.0, False
    balancer = parser.get_parsed_content("balancer")
    assert (balancer.s_min, balancer.clamp, balancer.direction) == (0.0, False, "grad")
