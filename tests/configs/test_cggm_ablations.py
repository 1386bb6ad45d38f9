"""``configs/ablations/cggm/``: each overlay, after the BraTS bundle and ``configs/balancers/cggm.yaml``, builds
CGGM and its auxiliary heads with only its own switches changed; ``sgd_paper.yaml`` trains without clipping."""

from __future__ import annotations

from typing import Any

import pytest
from monai.bundle import ConfigParser

import brats_cggm.balancing  # noqa: F401  (registers the balancers the configs name)
from brats_cggm.brats.model import DecoderAuxHead, SegmentationAuxHead
from brats_cggm.core.resources import bundle_config, config_path

SETTINGS = ("rho", "lam", "direction", "s_min", "clamp", "ema", "start_epoch", "epsilon", "magnitude")
PAPER = {"s_min": 0.0, "clamp": False, "direction": "param"}
#: what each overlay changes: CGGM's settings, and ``aux_head`` (the heads' kind)
ABLATIONS: dict[str, dict[str, Any]] = {
    "decoder": {"aux_head": "decoder"},
    "epsilon_ema": {"ema": 0.9},
    "epsilon_epoch": {"epsilon": "epoch"},
    "magnitude_only": {"direction": "none"},
    "direction_only": {"magnitude": False},
    "paper": PAPER,
    "authors": {"aux_head": "decoder", **PAPER},
}
HEADS = {"light": SegmentationAuxHead, "decoder": DecoderAuxHead}


def _parser(*overlays: str) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(bundle_config()), str(config_path("balancers", "cggm.yaml")), *overlays])
    parser["device"] = "cpu"
    return parser


def _built(parser: ConfigParser) -> dict[str, Any]:
    balancer = parser.get_parsed_content("balancer")
    assert type(balancer).__name__ == "CGGMBalancer"
    (kind,) = {
        name for name, cls in HEADS.items() if all(isinstance(h, cls) for h in parser.get_parsed_content("aux_heads"))
    }
    return {**{key: getattr(balancer, key) for key in SETTINGS}, "aux_head": kind}


def test_the_folder_holds_exactly_the_listed_ablations():
    folder = config_path("ablations", "cggm")
    assert folder.is_dir()
    assert sorted(p.stem for p in folder.glob("*.yaml")) == sorted(ABLATIONS)


@pytest.mark.parametrize("name", sorted(ABLATIONS))
def test_each_ablation_changes_only_its_switches(name: str):
    default = _built(_parser())
    assert default["aux_head"] == "light" and default["epsilon"] == "batch" and default["magnitude"] is True
    built = _built(_parser(str(config_path("ablations", "cggm", f"{name}.yaml"))))
    changed = {key: value for key, value in built.items() if value != default[key]}
    assert changed == ABLATIONS[name]


def test_the_authors_optimizer_overlay_trains_without_clipping():
    assert _parser().get_parsed_content("train#trainer#grad_clip") == 12.0  # the bundle's
    parser = _parser(str(config_path("optimizers", "sgd_paper.yaml")))
    assert parser.get_parsed_content("train#trainer#grad_clip") is None  # the trainer clips only when not None


def test_the_authors_setup_trains_validates_and_resumes_with_decoder_heads(tmp_path, phantom_dataset):
    import torch

    from tests.helpers.bundle_runs import train_tiny_run

    overlays = (
        "configs/balancers/cggm.yaml",
        "configs/ablations/cggm/authors.yaml",
        "configs/ablations/cggm/epsilon_epoch.yaml",
        "configs/optimizers/sgd_paper.yaml",
    )
    out = train_tiny_run(tmp_path / "run", phantom_dataset, overlays, warmup_epochs=1)
    checkpoint = torch.load(out / "models" / "checkpoint.pt", weights_only=True)
    assert any(".decoder.blocks." in key for key in checkpoint["aux_heads"])  # the heads that trained: decoders
    assert checkpoint["balancer"]["epoch_count"].sum() == 0  # epoch 1 ended: its ε became the held B
    held = checkpoint["balancer"]["held_coefficients"]
    # the saved model is the network alone: no head
    assert torch.load(out / "models" / "model.pt", weights_only=True).keys() == checkpoint["network"].keys()
    train_tiny_run(out, phantom_dataset, overlays, warmup_epochs=1, max_epochs=2, resume=True)
    resumed = torch.load(out / "models" / "checkpoint.pt", weights_only=True)
    assert resumed["trainer"]["iteration"] == 2 * checkpoint["trainer"]["iteration"]  # the second epoch ran
    assert not torch.equal(resumed["balancer"]["held_coefficients"], held)
