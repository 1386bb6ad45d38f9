"""``brats_cggm.core.resources``: the one place bundles and overlay configs are found, checkout or installed."""

from __future__ import annotations

from pathlib import Path

import pytest

from brats_cggm.core import resources

REPO = Path(__file__).resolve().parents[2]


def test_from_the_checkout_the_repository_files(monkeypatch):
    monkeypatch.delenv(resources.ENV_VAR, raising=False)
    assert resources.resource_root() == REPO
    assert resources.bundle_config() == REPO / "bundles" / "brats_cggm" / "configs" / "train.yaml"
    assert resources.bundle_dir("multimodal_cggm") == REPO / "bundles" / "multimodal_cggm"
    assert resources.config_path("balancers", "cggm.yaml") == REPO / "configs" / "balancers" / "cggm.yaml"
    assert resources.config_path("balancers", "cggm.yaml").is_file()


def test_without_a_checkout_the_installed_copy(monkeypatch, tmp_path):
    installed = tmp_path / "_resources"
    (installed / "bundles").mkdir(parents=True)
    (installed / "configs").mkdir()
    monkeypatch.delenv(resources.ENV_VAR, raising=False)
    monkeypatch.setattr(resources, "_checkout_root", lambda: tmp_path / "site-packages")
    monkeypatch.setattr(resources, "_packaged_root", lambda: installed)
    assert resources.resource_root() == installed
    monkeypatch.setattr(resources, "_packaged_root", lambda: tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=resources.ENV_VAR) as raised:
        resources.resource_root()
    assert str(tmp_path / "nowhere") in str(raised.value)


def test_the_environment_variable_wins_and_is_checked(monkeypatch, tmp_path):
    (tmp_path / "bundles").mkdir()
    (tmp_path / "configs").mkdir()
    monkeypatch.setenv(resources.ENV_VAR, str(tmp_path))
    assert resources.config_path("tasks") == tmp_path / "configs" / "tasks"
    monkeypatch.setenv(resources.ENV_VAR, str(tmp_path / "configs"))
    with pytest.raises(FileNotFoundError, match=resources.ENV_VAR):
        resources.resource_root()


def test_unknown_bundle_named():
    with pytest.raises(ValueError, match="nnunet"):
        resources.bundle_dir("nnunet")
