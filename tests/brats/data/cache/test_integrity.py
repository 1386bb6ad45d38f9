"""Damaged disk cache entries: rebuilt by fill_cache with a one-line warning, named when opened directly."""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from brats_cggm.brats.data.cache import integrity
from brats_cggm.brats.data.cache.disk import LoadCacheEntryd, fill_cache
from brats_cggm.brats.data.cache.integrity import CacheEntryError, forget_verified, verify_entry
from brats_cggm.brats.data.discovery import discover_dataset

OPTIONS = {"label_convention": "brats2021", "channel_order": None, "pixdim": [1.0, 1.0, 1.0]}
PATCH = (16, 16, 16)


@pytest.fixture
def items(phantom_dataset: Path, tmp_path: Path) -> list[dict]:
    """The first phantom case, copied."""
    case = sorted(p for p in phantom_dataset.iterdir() if p.is_dir())[0]
    shutil.copytree(case, tmp_path / "data" / case.name)
    return discover_dataset(tmp_path / "data").items


def _fill(items: list[dict], kind: str, cache: Path) -> dict:
    (entry,) = fill_cache(items, kind, cache, PATCH, OPTIONS, progress=False)
    return entry


def _zero(path: Path) -> None:
    array = np.load(path)
    np.save(path, np.zeros_like(array))


def _truncate(path: Path) -> None:
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 7)


def _delete(path: Path) -> None:
    path.unlink()


DAMAGE = [
    ("train", "image.npy", _zero, "image.npy checksum mismatch"),
    ("train", "image.npy", _truncate, "image.npy is .* bytes, its header's shape .* needs"),
    ("train", "label.npy", _delete, "label.npy missing"),
    ("train", "fg_indices.npy", _delete, "fg_indices.npy missing"),
    ("train", "fg_indices.npy", _truncate, "fg_indices.npy is .* bytes"),
    ("val", "label.npy", _delete, "label.npy missing"),
]
IDS = ["zeroed_image", "truncated_image", "missing_label", "missing_fg", "truncated_fg", "val_without_label"]


@pytest.mark.parametrize(("kind", "name", "damage", "cause"), DAMAGE, ids=IDS)
def test_damaged_entry_is_rebuilt_with_a_warning_naming_the_case(
    items: list[dict], tmp_path: Path, caplog, kind: str, name: str, damage, cause: str
):
    entry = _fill(items, kind, tmp_path / "cache")
    reference = (Path(entry["entry"]) / name).read_bytes()
    damage(Path(entry["entry"]) / name)
    forget_verified()  # another process: nothing verified yet
    with caplog.at_level(logging.WARNING, logger="brats_cggm.brats.data.cache.disk"):
        _fill(items, kind, tmp_path / "cache")
    (record,) = [r for r in caplog.records if "rebuilding" in r.getMessage()]
    message = record.getMessage()
    assert "\n" not in message and items[0]["case_id"] in message and entry["entry"] in message
    assert re.search(cause, message), message
    assert (Path(entry["entry"]) / name).read_bytes() == reference
    LoadCacheEntryd(whole=kind == "val")(dict(entry))


@pytest.mark.parametrize(("kind", "name", "damage", "cause"), DAMAGE, ids=IDS)
def test_damaged_entry_opened_directly_raises_a_named_error(
    items: list[dict], tmp_path: Path, kind: str, name: str, damage, cause: str
):
    entry = _fill(items, kind, tmp_path / "cache")
    damage(Path(entry["entry"]) / name)
    forget_verified()
    with pytest.raises(CacheEntryError, match=cause) as excinfo:
        LoadCacheEntryd(whole=kind == "val")(dict(entry))
    message = str(excinfo.value)
    assert message.startswith(f"cache entry {entry['entry']} of case {items[0]['case_id']}: ")
    assert isinstance(excinfo.value, OSError)


def test_entry_changed_after_verification_is_checked_again_when_opened(items: list[dict], tmp_path: Path):
    entry = _fill(items, "train", tmp_path / "cache")
    LoadCacheEntryd()(dict(entry))  # verified (by the fill) and opened
    _zero(Path(entry["entry"]) / "image.npy")  # new stat: the memo no longer applies
    with pytest.raises(CacheEntryError, match=r"image\.npy checksum mismatch"):
        LoadCacheEntryd()(dict(entry))


def test_checksums_are_read_once_per_process(items: list[dict], tmp_path: Path, monkeypatch):
    reads = []
    original = integrity._file_crc32
    monkeypatch.setattr(integrity, "_file_crc32", lambda path: reads.append(path.name) or original(path))
    entry = _fill(items, "train", tmp_path / "cache")
    assert sorted(reads) == ["bg_indices.npy", "fg_indices.npy", "image.npy", "label.npy"]  # after the build
    reads.clear()
    _fill(items, "train", tmp_path / "cache")
    for _ in range(3):
        LoadCacheEntryd()(dict(entry))
    assert reads == []
    forget_verified()
    LoadCacheEntryd()(dict(entry))
    assert len(reads) == 4


def test_missing_meta_is_named(items: list[dict], tmp_path: Path):
    entry = _fill(items, "val", tmp_path / "cache")
    (Path(entry["entry"]) / "meta.json").unlink()
    with pytest.raises(CacheEntryError, match=r"meta\.json missing or unreadable"):
        verify_entry(entry["entry"], "x")
    shutil.rmtree(entry["entry"])
    with pytest.raises(CacheEntryError, match=f"cache entry {entry['entry']} of case x: entry missing"):
        LoadCacheEntryd(whole=True)({**entry, "case_id": "x"})
