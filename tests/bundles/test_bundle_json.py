"""The BraTS bundle's JSON configs mirror its YAML configs, and MONAI's own loader builds the trained network."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil

import torch
import yaml

from brats_cggm.brats.model import build_network
from tests.helpers.bundle_configs import BRATS, REPO

TINY_FEATURES = [4, 8, 16]


def _bundle_json_script():
    spec = importlib.util.spec_from_file_location("bundle_json", REPO / "scripts" / "bundle_json.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_yaml_config_has_its_json_mirror_in_step():
    script = _bundle_json_script()
    assert script.stale_mirrors() == [], "run python scripts/bundle_json.py"
    names = sorted(p.stem for p in BRATS.glob("*.yaml"))
    assert {"train", "inference", "evaluate", "multi_gpu_train"} <= set(names)
    for name in names:
        assert json.loads((BRATS / f"{name}.json").read_text()) == yaml.safe_load((BRATS / f"{name}.yaml").read_text())


def test_a_stale_mirror_is_reported_and_rewritten(tmp_path):
    script = _bundle_json_script()
    (tmp_path / "inference.yaml").write_text("a: 1\n# a comment\nb: [x, y]\n")
    assert script.stale_mirrors(tmp_path) == [tmp_path / "inference.json"]
    assert script.write_mirrors(tmp_path) == [tmp_path / "inference.json"]
    assert json.loads((tmp_path / "inference.json").read_text()) == {"a": 1, "b": ["x", "y"]}
    assert script.stale_mirrors(tmp_path) == []


def test_monai_bundle_load_returns_the_network_with_the_trained_weights(tmp_path, monkeypatch):
    """``monai.bundle.load(..., workflow_type="inference")`` on a copy of the bundle with a models/model.pt."""
    from monai.bundle import load

    bundle = tmp_path / "bundles" / "brats_cggm"
    shutil.copytree(BRATS.parent, bundle, ignore=shutil.ignore_patterns("docs"))
    torch.manual_seed(1)
    trained = build_network("cpu", features=TINY_FEATURES)
    (bundle / "models").mkdir()
    torch.save(trained.state_dict(), bundle / "models" / "model.pt")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)

    network = load(
        name="brats_cggm",
        bundle_dir=str(tmp_path / "bundles"),
        workflow_type="inference",
        device="cpu",
        net_override={"features": TINY_FEATURES},
    )

    assert isinstance(network, torch.nn.Module) and type(network) is type(trained)
    loaded, expected = network.state_dict(), trained.state_dict()
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[k].cpu(), expected[k]) for k in expected)
    assert os.listdir(cwd) == []  # building the workflow (parse and initialize) wrote nothing
