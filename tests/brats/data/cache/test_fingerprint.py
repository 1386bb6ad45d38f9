"""Input fingerprints of disk cache entries: content changes behind a restored mtime, copies, cache_verify."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from brats_cggm.brats.data.cache import disk as disk_cache
from brats_cggm.brats.data.cache.disk import LoadCacheEntryd, fill_cache, read_entry_meta
from brats_cggm.brats.data.discovery import discover_dataset

OPTIONS = {"label_convention": "brats2021", "channel_order": None, "pixdim": [1.0, 1.0, 1.0]}


@pytest.fixture
def one_case(phantom_dataset: Path, tmp_path: Path) -> Path:
    """A one-case copy of the phantoms whose FLAIR is an uncompressed ``.nii`` (so a rewrite keeps its size)."""
    case = sorted(p for p in phantom_dataset.iterdir() if p.is_dir())[0]
    copy = tmp_path / "data" / case.name
    shutil.copytree(case, copy)
    flair = next(copy.glob("*_flair.nii.gz"))
    image = nib.load(str(flair))
    nib.save(nib.Nifti1Image(np.asanyarray(image.dataobj), image.affine), str(flair)[: -len(".gz")])
    flair.unlink()
    return copy.parent


@pytest.fixture
def built(monkeypatch) -> list[str]:
    """The case ids whose entries get built (absent, stale or damaged)."""
    calls: list[str] = []
    original = disk_cache._build_entry
    monkeypatch.setattr(
        disk_cache, "_build_entry", lambda job, head=None: calls.append(job[0]["case_id"]) or original(job, head)
    )
    return calls


def _flair(items: list[dict]) -> Path:
    return Path(next(p for p in items[0]["image"] if p.endswith("_flair.nii")))


def test_same_size_restored_mtime_changed_content_is_rebuilt(one_case: Path, tmp_path: Path, built: list[str]):
    items = discover_dataset(one_case).items
    (entry,) = fill_cache(items, "val", tmp_path / "cache", data_options=OPTIONS, progress=False)
    before = LoadCacheEntryd(whole=True)(dict(entry))["image"].numpy()
    flair = _flair(items)
    stat = flair.stat()
    image = nib.load(str(flair))
    data = np.ascontiguousarray(np.asanyarray(image.dataobj)[::-1])  # other content, same size uncompressed
    nib.save(nib.Nifti1Image(data, image.affine, image.header), str(flair))
    os.utime(flair, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert flair.stat().st_size == stat.st_size and flair.stat().st_mtime_ns == stat.st_mtime_ns
    built.clear()
    fill_cache(items, "val", tmp_path / "cache", data_options=OPTIONS, progress=False)
    assert built == [items[0]["case_id"]]
    after = LoadCacheEntryd(whole=True)(dict(entry))["image"].numpy()
    assert not np.array_equal(before, after)


def test_copy_with_identical_content_is_reused_and_its_stat_refreshed(one_case: Path, tmp_path: Path, built: list[str]):
    """``cp -a`` from an archive: new inodes and ctimes, one fixed mtime, same bytes -> the entry is kept."""
    items = discover_dataset(one_case).items
    archive = tmp_path / "archive"
    shutil.copytree(one_case, archive, copy_function=shutil.copy2)
    (entry,) = fill_cache(items, "val", tmp_path / "cache", data_options=OPTIONS, progress=False)
    stored = read_entry_meta(entry["entry"])["inputs"]
    shutil.rmtree(one_case)
    shutil.copytree(archive, one_case, copy_function=shutil.copy2)  # cp -a: same paths, new inodes
    for path in one_case.rglob("*.nii*"):
        os.utime(path, ns=(10**18, 10**18))  # the archive's one timestamp
    built.clear()
    fill_cache(items, "val", tmp_path / "cache", data_options=OPTIONS, progress=False)
    assert built == []
    refreshed = read_entry_meta(entry["entry"])["inputs"]
    assert [row[5] for row in refreshed] == [row[5] for row in stored]  # same hashes
    assert all(row[2] == 10**18 for row in refreshed)  # the new stat, so the next check is a stat again
    # the same copy with one file changed is rebuilt
    flair = _flair(items)
    image = nib.load(str(flair))
    nib.save(nib.Nifti1Image(np.asanyarray(image.dataobj) + 1, image.affine, image.header), str(flair))
    os.utime(flair, ns=(10**18, 10**18))
    fill_cache(items, "val", tmp_path / "cache", data_options=OPTIONS, progress=False)
    assert built == [items[0]["case_id"]]


def test_stat_mode_reads_nothing_unchanged_and_content_mode_hashes_every_file(
    one_case: Path, tmp_path: Path, monkeypatch
):
    from brats_cggm.brats.data.cache import fingerprint

    items = discover_dataset(one_case).items
    fill_cache(items, "val", tmp_path / "cache", data_options=OPTIONS, progress=False)
    hashed = []
    original = fingerprint.file_sha256
    monkeypatch.setattr(fingerprint, "file_sha256", lambda path: hashed.append(path) or original(path))
    fill_cache(items, "val", tmp_path / "cache", data_options=OPTIONS, progress=False, verify="stat")
    assert hashed == []
    fill_cache(items, "val", tmp_path / "cache", data_options=OPTIONS, progress=False, verify="content")
    assert len(hashed) == 5  # 4 modalities and the label
    with pytest.raises(ValueError, match="cache_verify: 'mtime'"):
        fill_cache(items, "val", tmp_path / "cache", data_options=OPTIONS, progress=False, verify="mtime")
