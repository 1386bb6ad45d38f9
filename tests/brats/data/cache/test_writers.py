"""Writing disk cache entries: racing writers, cleanup that spares live writers, full disks."""

from __future__ import annotations

import errno
import multiprocessing
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from brats_cggm.brats.data.cache import store
from brats_cggm.brats.data.cache.disk import CACHE_FORMAT_VERSION, fill_cache
from brats_cggm.brats.data.cache.integrity import CacheEntryError, entry_problem
from brats_cggm.brats.data.cache.store import entry_lock, remove_dead_temporaries, write_entry
from brats_cggm.brats.data.discovery import discover_dataset
from brats_cggm.core import locks

OPTIONS = {"label_convention": "brats2021", "channel_order": None, "pixdim": [1.0, 1.0, 1.0]}
WRITES = 300

# fork: the children share the parent's imports (a spawned one would spend seconds importing torch)
_FORK = multiprocessing.get_context("fork")


def _tiny(writer: int, i: int) -> tuple[dict, dict]:
    # even writes: both writers write the same entry (the loser keeps the winner's); odd: each its own content
    # (each moves the other's aside)
    tag = "same" if i % 2 == 0 else f"writer{writer}"
    image = np.full((1, 2, 2, 2), i % 2 + writer * (i % 2), np.float16)
    meta = {"format": CACHE_FORMAT_VERSION, "key": "k", "kind": "val", "case_id": "c", "image_shape": [1, 2, 2, 2]}
    return {"image": image}, {**meta, "inputs": [["x", 0, 0, 0, 0, tag]]}


def _write_many(entry: str, writer: int, start, errors) -> None:
    start.wait()
    for i in range(WRITES):
        try:
            write_entry(entry, *_tiny(writer, i))
        except Exception as exc:  # any exception is the failure under test
            errors.put(f"{type(exc).__name__}: {exc}")
            return


def test_two_processes_writing_one_entry_never_fail(tmp_path: Path):
    entry = str(tmp_path / "val-k" / "c-0")
    start, errors = _FORK.Event(), _FORK.Queue()
    writers = [_FORK.Process(target=_write_many, args=(entry, w, start, errors)) for w in (0, 1)]
    for w in writers:
        w.start()
    start.set()
    for w in writers:
        w.join(120)
    assert [w.exitcode for w in writers] == [0, 0]
    assert errors.empty(), errors.get()
    assert entry_problem(entry) is None
    assert sorted(p.name for p in Path(entry).parent.iterdir()) == ["c-0"]  # no temporary left


def _hold_lock(entry: str, held, release) -> None:
    lock = entry_lock(entry).acquire()
    held.set()
    release.wait(60)
    lock.release()


def _temporary_of_dead_pid(folder: Path, name: str) -> Path:
    tmp = folder / f".tmp.{2**23}.abcd.{name}"  # a pid above the kernel's pid_max: "dead" by its pid
    tmp.mkdir(parents=True)
    (tmp / "image.npy").write_bytes(b"half")
    return tmp


def test_cleanup_spares_a_writer_that_holds_the_entry_lock(tmp_path: Path):
    """A writer in another PID namespace or host: its PID means nothing here, its lock does."""
    folder = tmp_path / "val-k"
    tmp = _temporary_of_dead_pid(folder, "c-0")
    held, release = _FORK.Event(), _FORK.Event()
    holder = _FORK.Process(target=_hold_lock, args=(str(folder / "c-0"), held, release))
    holder.start()
    try:
        assert held.wait(30)
        assert remove_dead_temporaries(folder) == []
        assert tmp.is_dir()
    finally:
        release.set()
        holder.join(30)
    assert remove_dead_temporaries(folder) == [tmp]
    assert not tmp.exists() and not (folder / "c-0.lock").exists()


def test_without_locks_cleanup_waits_for_the_documented_age(tmp_path: Path, monkeypatch):
    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(locks.fcntl, "flock", no_locks)
    folder = tmp_path / "val-k"
    young, old = _temporary_of_dead_pid(folder, "c-0"), _temporary_of_dead_pid(folder, "c-1")
    then = time.time() - store.TMP_MAX_AGE_S - 60
    os.utime(old, (then, then))
    assert remove_dead_temporaries(folder) == [old]
    assert young.is_dir()


@pytest.mark.parametrize(
    "failure",
    [OSError("526 requested and 496 written"), OSError(errno.ENOSPC, "No space left on device")],
    ids=["numpy_short_write", "enospc"],
)
def test_full_disk_is_named_with_the_space_a_case_needs(
    phantom_dataset: Path, tmp_path: Path, monkeypatch, failure: OSError
):
    case = sorted(p for p in phantom_dataset.iterdir() if p.is_dir())[0]
    shutil.copytree(case, tmp_path / "data" / case.name)
    items = discover_dataset(tmp_path / "data").items
    written = []

    def full_disk(file, array, allow_pickle=False):
        if written:
            raise failure
        written.append(array.nbytes)
        np.lib.format.write_array(file, array, allow_pickle=allow_pickle)

    monkeypatch.setattr(np, "save", full_disk)
    cache = tmp_path / "cache"
    with pytest.raises(CacheEntryError) as excinfo:
        fill_cache(items, "val", cache, data_options=OPTIONS, progress=False)
    message = str(excinfo.value)
    assert f"no space left on device in {cache}: need ~" in message and " MB per case" in message
    assert items[0]["case_id"] in message and excinfo.value.errno == errno.ENOSPC
    need_mb = float(message.split("need ~")[1].split(" MB")[0])
    assert need_mb >= written[0] / 1e6  # at least the image it managed to write
    (folder,) = cache.iterdir()
    assert list(folder.iterdir()) == []  # no entry, no temporary, no lock


def test_full_disk_before_the_entry_lock_is_named_and_leaves_no_lock(
    phantom_dataset: Path, tmp_path: Path, monkeypatch
):
    case = sorted(p for p in phantom_dataset.iterdir() if p.is_dir())[0]
    shutil.copytree(case, tmp_path / "data" / case.name)
    items = discover_dataset(tmp_path / "data").items

    def no_space():
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(locks, "_holder_record", no_space)  # the lock file's record is its first write
    cache = tmp_path / "cache"
    with pytest.raises(CacheEntryError, match=f"no space left on device in {cache}: need ~0.3 MB per case"):
        fill_cache(items, "val", cache, data_options=OPTIONS, progress=False)
    (folder,) = cache.iterdir()
    assert list(folder.iterdir()) == []
