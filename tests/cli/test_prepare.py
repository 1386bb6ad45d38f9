"""``brats-cggm-prepare``: help, a tiny data set cached as the bundle reads it, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from brats_cggm.brats.data.cache.disk import preprocessing_key, read_entry_meta
from brats_cggm.cli.prepare import main


def test_help_names_the_program_and_its_options(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "brats-cggm-prepare" in out and "--cache-dir" in out and "--workers" in out


def test_prepares_a_tiny_data_set_with_the_bundle_keys(phantom_dataset: Path, tmp_path: Path, capsys):
    cache = tmp_path / "cache"
    assert main([str(phantom_dataset), "--cache-dir", str(cache), "--patch-size", "16", "16", "16"]) == 0
    # 4 cases, validation fraction 0.2 -> 1 validation case
    assert "3 training and 1 validation case(s) cached" in capsys.readouterr().out
    options = {"label_convention": "brats2021", "channel_order": None, "pixdim": [1.0, 1.0, 1.0]}
    train = sorted((cache / f"train-{preprocessing_key('train', (16, 16, 16), options)}").iterdir())
    val = sorted((cache / f"val-{preprocessing_key('val', (16, 16, 16), options)}").iterdir())
    assert len(train) == 3 and len(val) == 1
    assert all(read_entry_meta(e)["kind"] == "train" for e in train)
    assert (train[0] / "fg_indices.npy").is_file() and not (val[0] / "fg_indices.npy").exists()
    # a second run finds everything built
    mtimes = [(e / "meta.json").stat().st_mtime_ns for e in train]
    assert main([str(phantom_dataset), "--cache-dir", str(cache), "--patch-size", "16", "16", "16"]) == 0
    assert [(e / "meta.json").stat().st_mtime_ns for e in train] == mtimes
    assert json.loads((val[0] / "meta.json").read_text())["inputs"][0][0].startswith(str(phantom_dataset))


def test_missing_folder_is_named_and_exits_1(tmp_path: Path, capsys):
    missing = tmp_path / "no_such_data"
    assert main([str(missing), "--cache-dir", str(tmp_path / "cache")]) == 1
    err = capsys.readouterr().err
    assert str(missing) in err and err.startswith("brats-cggm-prepare: error:")
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("argv", [["--workers", "0", "x"], [], ["x", "--patch-size", "16"]])
def test_bad_arguments_exit_2(argv):
    assert main(argv) == 2


def test_verify_counts_and_repairs_a_damaged_cache(phantom_dataset: Path, tmp_path: Path, capsys):
    cache = tmp_path / "cache"
    argv = [str(phantom_dataset), "--cache-dir", str(cache), "--patch-size", "16", "16", "16"]
    assert main(argv) == 0
    train = sorted(p for p in next(cache.glob("train-*")).iterdir())
    np.save(train[0] / "image.npy", np.zeros_like(np.load(train[0] / "image.npy")))  # zeroed, same shape
    (train[1] / "label.npy").unlink()
    capsys.readouterr()
    assert main([*argv, "--verify"]) == 0
    out = capsys.readouterr().out
    assert "train: 3 entries: 1 valid, 2 rebuilt, 0 built (absent)" in out
    assert "image.npy checksum mismatch" in out and "label.npy missing" in out
    assert "val: 1 entries: 1 valid, 0 rebuilt, 0 built (absent)" in out
    assert main([*argv, "--verify"]) == 0
    assert "train: 3 entries: 3 valid, 0 rebuilt" in capsys.readouterr().out


def test_verify_exits_1_naming_an_entry_that_stays_invalid(phantom_dataset: Path, tmp_path: Path, capsys, monkeypatch):
    from brats_cggm.brats.data.cache import disk

    cache = tmp_path / "cache"
    argv = [str(phantom_dataset), "--cache-dir", str(cache), "--patch-size", "16", "16", "16"]
    assert main(argv) == 0
    (val,) = next(cache.glob("val-*")).iterdir()
    (val / "image.npy").unlink()
    # a builder that leaves the damage in place (a disk that drops writes, say)
    monkeypatch.setattr(disk, "_build_entry", lambda job, head=None: job[1])
    capsys.readouterr()
    assert main([*argv, "--verify"]) == 1
    err = capsys.readouterr().err
    assert f"brats-cggm-prepare: error: cache entry {val} of case " in err and "image.npy missing" in err
