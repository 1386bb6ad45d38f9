"""Bundle configs are pure descriptions: parsing any key of any config writes nothing.

Every id (nested ones too) of every bundle config, and of train.yaml with each balancer, ablation and optimizer
overlay and of the multimodal bundle with each task overlay, is parsed with ``ConfigParser.get_parsed_content``
in an empty working directory; only the workflow steps (``initialize``, ``run``, ``finalize``) are left out, since
parsing them runs the bundle (they generate the phantom set, take the output folder's lock, train).

Keys that legitimately fail without data: with the default ``dataset_dir`` (the phantom set, not generated
before a run) every key that reads the data set (``dataset_root`` and what depends on it: ``dataset``,
``split``, ``data_options``, the datasets, loaders, trainer and evaluators) fails with a FileNotFoundError that
says how to get the data; the multimodal bundle's keys that need its task overlay or ``dataset_dir`` fail with
the bundle guards' errors. With a data set every key parses; building a BraTS ``cache: disk`` dataset fills
the preprocessing cache (``cache_dir``), the only folder it writes.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch.distributed as dist

from tests.helpers.bundle_configs import (
    BRATS,
    REPO,
    brats_config_sets,
    description_ids,
    multimodal_config_sets,
    read_configs,
)

BRATS_SETS = brats_config_sets()
MULTIMODAL_SETS = multimodal_config_sets()
TINY_BRATS = {"device": "cpu", "patch_size": [16, 16, 16], "network_def#features": [4, 8, 16]}


def _snapshot(*folders: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p): (p.stat().st_size, p.stat().st_mtime_ns) for folder in folders for p in folder.rglob("*") if p.exists()
    }


def _root_cause(error: BaseException) -> BaseException:
    while error.__cause__ is not None:
        error = error.__cause__
    return error


def _parse_every_key(files: list[Path], **overrides: object) -> dict[str, BaseException]:
    """Parse every description id of ``files``; the root error of each id that failed."""
    parser = read_configs(files, **overrides)
    failed = {}
    for id_ in description_ids(parser):
        try:
            parser.get_parsed_content(id_)
        except Exception as error:  # each failure is checked by the caller
            failed[id_] = _root_cause(error)
    return failed


def _data_missing(error: BaseException) -> bool:
    message = str(error)
    return (isinstance(error, FileNotFoundError) and "phantom set is not generated yet" in message) or (
        # the multimodal bundle's guards (brats_cggm.adapters.bundle_guards)
        "dataset_dir" in message or "task overlay" in message
    )


@pytest.mark.parametrize("name", [*BRATS_SETS, *MULTIMODAL_SETS])
def test_parsing_every_key_in_an_empty_directory_writes_nothing(name, tmp_path, monkeypatch):
    files = {**BRATS_SETS, **MULTIMODAL_SETS}[name]
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    bundles = _snapshot(REPO / "bundles", REPO / "configs")

    failed = _parse_every_key(files, device="cpu")

    assert sorted(os.listdir(cwd)) == []
    assert _snapshot(REPO / "bundles", REPO / "configs") == bundles
    unexpected = {id_: repr(e) for id_, e in failed.items() if not _data_missing(e)}
    assert not unexpected, unexpected
    if name.startswith("brats/"):  # what needs no data parses: the network, the balancer, the optimizers
        assert {"network", "balancer", "network_def", "device"}.isdisjoint(failed)


@pytest.mark.parametrize(
    "name",
    ["brats/train", "brats/multi_gpu_train", "brats/inference", "brats/evaluate", "brats/train+balancers/ogm_ge"],
)
def test_with_data_every_key_parses_and_only_the_cache_is_written(name, phantom_dataset, tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    cache_dir = tmp_path / "cache"
    untouched = (REPO / "bundles", phantom_dataset)
    before = _snapshot(*untouched)
    if name == "brats/multi_gpu_train":  # its samplers need a process group: one of world size 1
        dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        failed = _parse_every_key(
            BRATS_SETS[name], dataset_dir=str(phantom_dataset), cache_dir=str(cache_dir), **TINY_BRATS
        )
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()

    assert failed == {}
    assert sorted(os.listdir(cwd)) == []
    assert _snapshot(*untouched) == before
    written = {p.parts[len(tmp_path.parts)] for p in tmp_path.rglob("*")} - {"cwd", "store"}
    assert written <= {"cache"}


@pytest.mark.parametrize("name", ["multimodal/train+mosi", "multimodal/inference+mosi"])
def test_with_data_every_multimodal_key_parses_and_nothing_is_written(name, tmp_path, monkeypatch):
    from brats_cggm.adapters import synthetic

    synthetic.write_mosi_pickle(tmp_path / "mosi.pkl", sizes={"train": 4, "valid": 2, "test": 2})
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    before = _snapshot(tmp_path, REPO / "bundles")

    failed = _parse_every_key(MULTIMODAL_SETS[name], dataset_dir=str(tmp_path / "mosi.pkl"), device="cpu")

    assert failed == {}
    assert _snapshot(tmp_path, REPO / "bundles") == before


def test_the_run_generates_the_phantoms_that_parsing_does_not(tmp_path, monkeypatch):
    """train.yaml's initialize generates the default phantom set (as inference's and evaluate's run do)."""
    from monai.bundle import ConfigParser

    monkeypatch.chdir(tmp_path)
    parser = ConfigParser()
    parser.read_config(str(BRATS / "train.yaml"))
    parser["phantoms"] = {"n": 2, "shape": [24, 24, 24], "seed": 0}
    with pytest.raises(RuntimeError) as error:
        parser.get_parsed_content("dataset")
    assert "brats-cggm-phantoms" in str(_root_cause(error.value))
    assert os.listdir(tmp_path) == []
    step = next(i for i, s in enumerate(parser["initialize"]) if "resolve_dataset_dir" in str(s))
    parser.get_parsed_content(f"initialize#{step}")
    assert len(parser.get_parsed_content("dataset").items) == 2
    assert sorted(p.name for p in (tmp_path / "data" / "brats_phantoms").iterdir()) == [
        "BraTS2021_00000",
        "BraTS2021_00001",
    ]
    for files in BRATS_SETS["brats/inference"], BRATS_SETS["brats/evaluate"]:
        assert "resolve_dataset_dir" in str(read_configs(files)["run"][0]), files
