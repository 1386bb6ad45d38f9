"""Integrity of disk cache entries: checksummed writes, and a structure and checksum check once per process.

Each ``.npy`` of an entry is written through :func:`save_checksummed`, which records its size, shape, dtype
and CRC-32 as the bytes go to disk (no second read); :func:`verify_entry` checks an entry against these
records: every expected array present, headers readable, file sizes equal to what the headers' shapes need,
shapes consistent with ``meta.json``, and each file's CRC-32. A verified entry is remembered (memoised by the
``stat`` of its files) for the life of the process and of any process forked from it, so a DataLoader worker
re-checks nothing its parent verified, and an entry is read whole for checking at most once per process.
"""

from __future__ import annotations

import json
import math
import os
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

__all__ = [
    "REQUIRED_ARRAYS",
    "CacheEntryError",
    "entry_problem",
    "forget_verified",
    "read_meta",
    "save_checksummed",
    "verify_entry",
]

#: The arrays an entry of each kind must hold (a labelled validation entry holds ``label`` too).
REQUIRED_ARRAYS = {"train": ("image", "label", "fg_indices", "bg_indices"), "val": ("image",)}

_META = "meta.json"
_CHUNK = 8 << 20

# entry folder -> stat signature of its files when it was last verified in this process.
_VERIFIED: dict[str, tuple] = {}


class CacheEntryError(OSError):
    """A cache entry that cannot be used, naming the entry folder, the case and the cause.

    Attributes:
        entry: the entry folder.
        case_id: the case (None when unknown).
        cause: what is wrong, in words.
    """

    def __init__(self, entry: str | os.PathLike, case_id: Any, cause: str, errno_: int | None = None) -> None:
        self.entry, self.case_id, self.cause, self.errno_ = Path(entry), case_id, cause, errno_
        message = f"cache entry {entry} of case {case_id}: {cause}"
        if errno_ is None:
            super().__init__(message)
        else:
            super().__init__(errno_, message)

    def __str__(self) -> str:
        return f"cache entry {self.entry} of case {self.case_id}: {self.cause}"

    def __reduce__(self) -> tuple:
        # OSError pickles its args, not ours: a pool process's error must arrive whole.
        return (type(self), (str(self.entry), self.case_id, self.cause, self.errno_))


class _ChecksumWriter:
    """A write-only file wrapper that counts and checksums what goes through it."""

    def __init__(self, file: BinaryIO) -> None:
        self.file, self.crc32, self.size = file, 0, 0

    def write(self, data: bytes) -> int:
        view = memoryview(data).cast("B")
        self.crc32 = zlib.crc32(view, self.crc32)
        self.size += view.nbytes
        self.file.write(view)
        return view.nbytes


def save_checksummed(path: Path, array: np.ndarray) -> dict[str, Any]:
    """Write ``array`` as an ``.npy`` file, fsynced, and return its record for ``meta.json``.

    Args:
        path: the file to write.
        array: the array (written C-contiguous, without pickles).

    Returns:
        ``{"size", "crc32", "shape", "dtype"}`` of the file as written.
    """
    array = np.ascontiguousarray(array)
    with open(path, "wb") as f:
        writer = _ChecksumWriter(f)
        np.save(writer, array, allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())
    return {"size": writer.size, "crc32": writer.crc32, "shape": list(array.shape), "dtype": array.dtype.str}


def read_meta(entry_dir: str | os.PathLike) -> dict[str, Any] | None:
    """An entry's ``meta.json``, or None if the entry is absent or its meta unreadable."""
    try:
        with open(Path(entry_dir) / _META, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _file_crc32(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            crc = zlib.crc32(chunk, crc)
    return crc


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(f)
        return tuple(shape), dtype, f.tell()


def _array_problem(path: Path, record: Mapping[str, Any], checksum: bool) -> str | None:
    """What is wrong with one stored array, or None."""
    name = path.name
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return f"{name} missing"
    try:
        shape, dtype, offset = _npy_header(path)
    except (OSError, ValueError) as exc:
        return f"{name} header unreadable ({exc})"
    expected = offset + math.prod(shape) * dtype.itemsize
    if size != expected:
        return f"{name} is {size} bytes, its header's shape {list(shape)} needs {expected} (truncated or overwritten)"
    if list(shape) != list(record.get("shape", [])) or dtype.str != record.get("dtype"):
        return f"{name} holds {dtype.str} {list(shape)}, meta.json says {record.get('dtype')} {record.get('shape')}"
    if size != record.get("size"):
        return f"{name} is {size} bytes, meta.json says {record.get('size')}"
    if not checksum:
        return None
    try:
        crc32 = _file_crc32(path)
    except OSError as exc:  # removed or replaced since its stat (another writer)
        return f"{name} unreadable ({exc})"
    return f"{name} checksum mismatch" if crc32 != record.get("crc32") else None


def _meta_problem(meta: Mapping[str, Any], kind: str | None, labelled: bool | None) -> str | None:
    """What is inconsistent in ``meta.json`` itself (expected arrays, shapes), or None."""
    files = meta.get("files")
    if not isinstance(files, dict):
        return "meta.json lists no checksummed arrays"
    kind = kind or meta.get("kind")
    if kind not in REQUIRED_ARRAYS:
        return f"meta.json kind {kind!r} unknown"
    required = list(REQUIRED_ARRAYS[kind]) + (["label"] if labelled else [])
    missing = [name for name in required if f"{name}.npy" not in files]
    if missing:
        return f"meta.json lists no {', '.join(f'{m}.npy' for m in missing)}"
    image_shape = list(meta.get("image_shape") or [])
    if files["image.npy"].get("shape") != image_shape or len(image_shape) != 4:
        return f"image.npy shape {files['image.npy'].get('shape')} differs from meta.json image_shape {image_shape}"
    if "label.npy" in files and (files["label.npy"].get("shape") != image_shape[1:] or "n_regions" not in meta):
        return "label.npy shape or n_regions inconsistent with meta.json"
    for name in ("fg_indices.npy", "bg_indices.npy"):
        if name in files and len(files[name].get("shape", [])) != 1:
            return f"{name} is not a flat index list"
    return None


def _signature(entry_dir: Path, names: list[str]) -> tuple | None:
    signature = []
    for name in [_META, *names]:
        try:
            st = os.stat(entry_dir / name)
        except OSError:
            return None
        signature.append((name, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino))
    return tuple(signature)


def verify_entry(
    entry_dir: str | os.PathLike,
    case_id: Any = None,
    kind: str | None = None,
    labelled: bool | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Check an entry's structure and checksums, once per process while its files are unchanged.

    Args:
        entry_dir: the entry folder.
        case_id: the case, for messages (None: from ``meta.json``).
        kind: the kind the entry must be (None: its own ``meta["kind"]``).
        labelled: require ``label.npy`` (validation entries of labelled cases).
        force: check again even if this process verified the unchanged files before.

    Returns:
        The entry's ``meta.json``.

    Raises:
        CacheEntryError: what is wrong, naming the entry and the case.
    """
    entry_dir = Path(entry_dir)
    meta = read_meta(entry_dir)
    if meta is None:
        cause = "meta.json missing or unreadable" if entry_dir.exists() else "entry missing"
        raise CacheEntryError(entry_dir, case_id, cause)
    case_id = case_id if case_id is not None else meta.get("case_id")
    problem = _meta_problem(meta, kind, labelled)
    if problem:
        raise CacheEntryError(entry_dir, case_id, problem)
    names = sorted(meta["files"])
    signature = _signature(entry_dir, names)
    if not force and signature is not None and _VERIFIED.get(str(entry_dir)) == signature:
        return meta
    # structure first (cheap, names the commonest damage: truncation), then the checksums
    for checksum in (False, True):
        for name in names:
            problem = _array_problem(entry_dir / name, meta["files"][name], checksum)
            if problem:
                _VERIFIED.pop(str(entry_dir), None)
                raise CacheEntryError(entry_dir, case_id, problem)
    if signature is not None:
        _VERIFIED[str(entry_dir)] = signature
    return meta


def entry_problem(
    entry_dir: str | os.PathLike, kind: str | None = None, labelled: bool | None = None, force: bool = False
) -> str | None:
    """The cause that makes an entry unusable (see :func:`verify_entry`), or None for a valid entry."""
    try:
        verify_entry(entry_dir, kind=kind, labelled=labelled, force=force)
    except CacheEntryError as exc:
        return exc.cause
    return None


def forget_verified(entry_dir: str | os.PathLike | None = None) -> None:
    """Forget that this process verified an entry (None: every entry), so its next open checks it again."""
    if entry_dir is None:
        _VERIFIED.clear()
    else:
        _VERIFIED.pop(str(Path(entry_dir)), None)
