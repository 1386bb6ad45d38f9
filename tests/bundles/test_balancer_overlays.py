"""Every balancer overlay of ``configs/balancers`` trains on the BraTS bundle (tiny overrides).

Each run goes through MONAI's ``ConfigWorkflow`` exactly as ``python -m monai.bundle run --config_file
"['bundles/brats_cggm/configs/train.yaml','configs/balancers/<name>.yaml']"`` does, then the test checks the
method's TensorBoard scalars (``<method>/...``) and that its state is in the training checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigWorkflow

from brats_cggm.balancing import create_balancer
from brats_cggm.core.events import read_scalars

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "bundles" / "brats_cggm" / "configs"
BALANCERS = REPO / "configs" / "balancers"
MODALITIES = ("flair", "t1ce", "t1", "t2")
TINY = {
    "val_interval": 1,
    "patch_size": [16, 16, 16],
    "network_def#features": [4, 8, 16],
    "num_samples": 1,
    "sw_batch_size": 8,
    "sw_overlap": 0.0,
    "device": "cpu",
    "cache_rate": 0.0,
    # one training batch (2 of the 3 training cases) per epoch; one 32³ validation case in 8 windows
    "train#dataset#data": "$@split[0][:2]",
}

#: overlay → (extra overrides that make the method act within the tiny budget, epochs, scalar tags expected)
CASES = {
    "ogm_ge": ({}, 1, {"ogm_ge/k/flair", "ogm_ge/ratio/t1", "ogm_ge/score/t2"}),
    "opm": ({"balancer#warmup_epochs": 0}, 1, {"opm/q/flair", "opm/ratio/t1ce", "opm/executed"}),
    # the Fisher traces are epoch-level: logged in the epoch after
    "inforeg": ({}, 2, {"inforeg/grad_sq/flair", "inforeg/gap/t1", "inforeg/window/t2", "inforeg/trace/t1ce"}),
    # diagnosis after epoch 1 on the validation loader found through the ValidationHandler
    "relearning": (
        {"balancer#reinit_epoch": 1, "balancer#reinit_num": 1, "balancer#voxels_per_class": 32},
        2,
        {"relearning/alpha/flair", "relearning/purity_train/t1", "relearning/purity_val/t2", "relearning/gap/t1ce"},
    ),
    "mmpareto": ({}, 1, {"mmpareto/cos/flair", "mmpareto/c_mm/t1", "mmpareto/conflict/t2"}),
}


def test_the_dropout_overlay_is_joint_training_with_the_missing_modality_option():
    import yaml

    config = yaml.safe_load((BALANCERS / "dropout.yaml").read_text())
    assert config["balancer"]["_target_"] == "brats_cggm.balancing.joint.JointBalancer"
    assert config["modality_dropout"]["p"] > 0


@pytest.mark.parametrize("overlay", ["cggm", "dropout"])
def test_missing_modality_training_composes_with_a_balancer_and_logs_what_it_dropped(
    overlay: str, phantom_dataset: Path, tmp_path: Path
):
    output_dir = tmp_path / "out"
    overrides = {"modality_dropout#p": 0.5} if overlay == "cggm" else {}
    workflow = ConfigWorkflow(
        config_file=[str(CONFIGS / "train.yaml"), str(BALANCERS / f"{overlay}.yaml")],
        meta_file=str(CONFIGS / "metadata.json"),
        logging_file=str(CONFIGS / "logging.conf"),
        workflow_type="train",
        dataset_dir=str(phantom_dataset),
        output_dir=str(output_dir),
        max_epochs=1,
        **TINY,
        **overrides,
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()

    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert metrics["balancer"] == ("cggm" if overlay == "cggm" else "joint")
    assert metrics["modality_dropout"]["p"] == (0.5 if overlay == "cggm" else 0.25)
    scalars = read_scalars(output_dir)
    assert {f"modality_dropout/run/{m}" for m in MODALITIES} <= set(scalars)
    checkpoint = torch.load(output_dir / "models" / "checkpoint.pt", map_location="cpu", weights_only=True)
    counts = checkpoint["modality_dropout"]
    assert counts["samples"] > 0 and counts["dropped"].shape == (len(MODALITIES),)
    last_rates = [scalars[f"modality_dropout/run/{m}"][-1][1] for m in MODALITIES]
    assert last_rates == pytest.approx((counts["dropped"] / counts["samples"]).tolist())


def test_every_registered_balancer_has_an_overlay():
    import yaml

    from brats_cggm.balancing import available_balancers

    for name in available_balancers():
        overlay = BALANCERS / f"{name}.yaml"
        assert overlay.is_file(), overlay
        config = yaml.safe_load(overlay.read_text())
        assert set(config) == {"balancer"}, f"{overlay}: an overlay only replaces the balancer entry"
        # overlays reference nothing but keys every bundle defines, so they work on every task
        refs = {v for v in config["balancer"].values() if isinstance(v, str) and v.startswith(("@", "$"))}
        assert refs <= {"@modalities", "@seed", "@cggm_rho", "@cggm_lambda"}, (overlay, refs)
        if name not in ("joint", "cggm"):
            kwargs = {k: v for k, v in config["balancer"].items() if not k.startswith("_")}
            kwargs = {k: (MODALITIES if v == "@modalities" else 0 if v == "@seed" else v) for k, v in kwargs.items()}
            assert create_balancer(name, **kwargs).name == name


#: two-epoch runs (epoch-level decisions) are the slow ones
SLOW = {"inforeg", "relearning"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in sorted(CASES)])
def test_overlay_trains_logs_and_checkpoints(name: str, phantom_dataset: Path, tmp_path: Path):
    overrides, epochs, expected = CASES[name]
    output_dir = tmp_path / "out"
    workflow = ConfigWorkflow(
        config_file=[str(CONFIGS / "train.yaml"), str(BALANCERS / f"{name}.yaml")],
        meta_file=str(CONFIGS / "metadata.json"),
        logging_file=str(CONFIGS / "logging.conf"),
        workflow_type="train",
        dataset_dir=str(phantom_dataset),
        output_dir=str(output_dir),
        max_epochs=epochs,
        **TINY,
        **overrides,
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()

    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert metrics["balancer"] == name and metrics["epoch"] == epochs
    assert 0.0 <= metrics["validation"]["val/dice/mean"] <= 1.0
    tags = set(read_scalars(output_dir))
    assert expected <= tags, expected - tags
    assert not {t for t in tags if t.startswith("cggm/")}, "the overlay did not replace the default balancer"

    balancer = workflow.parser.get_parsed_content("balancer")
    checkpoint = torch.load(output_dir / "models" / "checkpoint.pt", map_location="cpu", weights_only=False)
    saved = checkpoint["balancer"]
    assert set(saved) == set(balancer.state_dict()) and saved
    restored = create_balancer(name, modalities=MODALITIES)
    restored.load_state_dict(saved)
    for key, value in restored.state_dict().items():
        if isinstance(value, torch.Tensor):
            torch.testing.assert_close(value, saved[key].to(value.dtype))
