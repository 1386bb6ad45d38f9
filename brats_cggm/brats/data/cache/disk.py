"""A persistent, memory-mapped on-disk cache of the deterministic BraTS preprocessing.

``CacheDataset`` keeps every preprocessed case in memory on every rank: about 135 MB per full-size BraTS case,
~170 GB per rank for BraTS 2021's 1,251 cases. This module instead runs the deterministic part of the chains of
:mod:`brats_cggm.brats.data.transforms` (every transform before the first random one: checked loading, regions,
orientation, spacing, foreground crop, normalisation, padding, crop-centre indices) once per case and stores
the result in a compact form, one folder per case::

    <cache_dir>/<kind>-<settings key>/<case id>-<paths hash>/
        image.npy        float16 (C, X, Y, Z): the normalised image
        label.npy        uint8 (X, Y, Z): the regions as bits (bit i = region i of REGIONS)
        fg_indices.npy   int64: flat indices of tumour voxels (training entries only)
        bg_indices.npy   int64: flat indices of background voxels inside the head (training entries only)
        meta.json        format version, settings key, kind, input fingerprint (stat and SHA-256 per file),
                         files (size, shape, dtype, CRC-32 per array), affine, shape, float16 error

Training reads entries through :class:`LoadCacheEntryd` (memory-mapped, nothing read yet) and
:class:`RandCropCachedPatchd` (reads only the voxels of each patch), then the random tail of
:func:`~brats_cggm.brats.data.transforms.train_transforms` unchanged, so memory per rank does not grow with the
number of cases.

Validity. The folder of a kind holds entries made with one set of preprocessing settings (its name is a hash
of them, :func:`preprocessing_key`). :func:`fill_cache` uses an entry only if (1) its ``meta.json`` has this
format version and key; (2) its input files are those it was built from
(:mod:`~brats_cggm.brats.data.cache.fingerprint`: per file size, mtime, ctime, inode and a SHA-256 of the bytes;
``cache_verify: stat`` hashes a file only when its stat changed, ``content`` always); (3) it is whole
(:mod:`~brats_cggm.brats.data.cache.integrity`): every array of its kind present (training: image, label,
fg_indices, bg_indices; validation: image, and label for a labelled case), ``.npy`` headers readable, sizes
equal to what the headers' shapes need, shapes agreeing with ``meta.json``, and each file's CRC-32 (recorded
at write) matching. Any other entry is rebuilt, with a one-line warning naming the entry, the case and the
reason. The checksums are read once per process: :func:`fill_cache` verifies its entries in the main process
before the DataLoader's workers fork (they inherit the memo), and :class:`LoadCacheEntryd` verifies an entry
this process has not verified (or whose files' stat changed) when it opens it, raising
:class:`~brats_cggm.brats.data.cache.integrity.CacheEntryError` (entry, case, cause) for anything wrong.

Writing (:mod:`~brats_cggm.brats.data.cache.store`). An entry is built under its lock
(``<kind folder>/<entry name>.lock``) and written into a temporary folder renamed into place once complete,
never over another writer's valid entry, so a killed fill leaves at most a ``.tmp.*`` folder, never read and
removed by a later fill once nobody holds that entry's lock (on a file system without locks: once older than
24 h). A full disk is reported as such, with the space a case needs.

Precision. ``float16`` keeps 11 significant bits: a normalised intensity ``x`` (z-scores, |x| < 16 in
practice) is stored with an error of at most ``|x| * 2**-11`` (<= 0.0078 for |x| < 16), measured per case
and recorded as ``meta["image_max_abs_error"]``: far below the training's intensity jitter (+-10 % scale,
+-0.1 shift). Labels and indices are exact.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, MapTransform, RandCropByPosNegLabeld, Randomizable
from monai.transforms.utils import generate_pos_neg_label_crop_centers

from brats_cggm.brats.data.cache.fingerprint import (
    VERIFY_MODES,
    case_key,
    check_inputs_exist,
    fingerprint_problem,
    input_fingerprint,
    input_paths,
)
from brats_cggm.brats.data.cache.integrity import CacheEntryError, entry_problem, read_meta, verify_entry
from brats_cggm.brats.data.cache.store import (
    disk_full_error,
    entry_lock,
    is_disk_full,
    remove_dead_temporaries,
    rewrite_meta,
    write_entry,
)
from brats_cggm.brats.data.labels import REGIONS
from brats_cggm.brats.data.nifti_checks import load_nifti
from brats_cggm.brats.data.transforms import train_transforms, val_transforms
from brats_cggm.core.locks import LockHeldError

__all__ = [
    "CACHE_FORMAT_VERSION",
    "CACHE_KINDS",
    "VERIFY_MODES",
    "CacheEntryError",
    "FillReport",
    "LoadCacheEntryd",
    "RandCropCachedPatchd",
    "cache_chains",
    "default_cache_dir",
    "entry_name",
    "fill_cache",
    "input_fingerprint",
    "pack_regions",
    "preprocess_case",
    "preprocessing_key",
    "read_entry_meta",
    "unpack_regions",
    "write_entry",
]

logger = logging.getLogger(__name__)

#: Bumped whenever the layout or the meaning of an entry changes: older entries are then rebuilt.
CACHE_FORMAT_VERSION = 2

#: The chains an entry can come from: ``train`` (padded, with crop-centre indices) or ``val`` (whole volume).
CACHE_KINDS = ("train", "val")

_ABSENT = "entry missing"


def default_cache_dir() -> Path:
    """Where caches go when no folder is given: ``$BRATS_CGGM_CACHE``, else ``$XDG_CACHE_HOME/brats_cggm``,
    else ``~/.cache/brats_cggm``.

    A user cache folder, not the data set's folder (which may be read-only or shared) nor a run's output
    folder (a new one per run, so nothing would be reused).
    """
    if os.environ.get("BRATS_CGGM_CACHE"):
        return Path(os.environ["BRATS_CGGM_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "brats_cggm"


def cache_chains(
    kind: str,
    patch_size: Sequence[int] = (48, 48, 48),
    num_samples: int = 2,
    data_options: Mapping[str, Any] | None = None,
) -> tuple[list, list]:
    """The deterministic head and the random tail of the training or validation chain.

    The head is every transform before the first ``Randomizable`` one of
    :func:`~brats_cggm.brats.data.transforms.train_transforms` (``kind="train"``) or
    :func:`~brats_cggm.brats.data.transforms.val_transforms` (``kind="val"``, all deterministic); the split is
    taken from those functions, so the cache cannot drift from the in-memory chains.

    Args:
        kind: one of :data:`CACHE_KINDS`.
        patch_size: the training patch (padding and crops).
        num_samples: patches per case and draw.
        data_options: keyword arguments of :func:`~brats_cggm.brats.data.transforms.preprocessing`.

    Returns:
        ``(head, tail)``: two lists of transforms.

    Raises:
        ValueError: an unknown ``kind``.
    """
    options = dict(data_options or {})
    if kind == "train":
        chain = train_transforms(patch_size=patch_size, num_samples=num_samples, **options)
    elif kind == "val":
        chain = val_transforms(**options)
    else:
        raise ValueError(f"cache kind {kind!r}: expected one of {CACHE_KINDS}")
    transforms = list(chain.transforms)
    first_random = next((i for i, t in enumerate(transforms) if isinstance(t, Randomizable)), len(transforms))
    return transforms[:first_random], transforms[first_random:]


def _canonical(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, (np.generic,)):
        return value.item()
    return value


def preprocessing_key(kind: str, patch_size: Sequence[int], data_options: Mapping[str, Any] | None) -> str:
    """A hash of everything that determines an entry's content except the input files.

    Covers the cache format version, the chain's kind, the patch size (padding), the preprocessing options
    (label convention, channel order, spacing, ...) and the names of the deterministic transforms (a code
    change that adds or removes a step changes the key).

    Args:
        kind: one of :data:`CACHE_KINDS`.
        patch_size: the training patch.
        data_options: keyword arguments of :func:`~brats_cggm.brats.data.transforms.preprocessing`.

    Returns:
        16 hexadecimal digits.
    """
    head, _ = cache_chains(kind, patch_size, 1, data_options)
    options = dict(data_options or {})
    if options.get("pixdim") is not None:
        # 1 and 1.0 mm are one setting.
        options["pixdim"] = [float(p) for p in options["pixdim"]]
    settings = {
        "format": CACHE_FORMAT_VERSION,
        "kind": kind,
        "patch_size": [int(s) for s in patch_size] if kind == "train" else None,
        "data_options": _canonical(options),
        "transforms": [type(t).__name__ for t in head],
    }
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def entry_name(item: Mapping[str, Any]) -> str:
    """The entry folder's name: the case id and a hash of the input paths (two data sets never collide)."""
    digest = hashlib.sha256("\n".join(input_paths(item)).encode()).hexdigest()[:12]
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in case_key(item)).lstrip(".")
    return f"{safe}-{digest}"


def pack_regions(regions: np.ndarray | torch.Tensor) -> np.ndarray:
    """Region masks ``(R, X, Y, Z)`` (R <= 8, values 0/1) as one ``uint8`` volume, bit ``i`` = region ``i``."""
    masks = np.asarray(regions.detach().cpu() if isinstance(regions, torch.Tensor) else regions) > 0.5
    if masks.shape[0] > 8:
        raise ValueError(f"cannot pack {masks.shape[0]} regions into 8 bits")
    packed = np.zeros(masks.shape[1:], dtype=np.uint8)
    for i, mask in enumerate(masks):
        packed |= mask.astype(np.uint8) << i
    return packed


def unpack_regions(packed: np.ndarray, n_regions: int = len(REGIONS)) -> np.ndarray:
    """Inverse of :func:`pack_regions`: ``uint8 (X, Y, Z)`` -> ``float32 (n_regions, X, Y, Z)`` of 0/1."""
    packed = np.asarray(packed)
    bits = np.arange(n_regions, dtype=np.uint8).reshape((-1,) + (1,) * packed.ndim)
    return ((packed[None] >> bits) & 1).astype(np.float32)


def preprocess_case(item: Mapping[str, Any], head: Callable) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Run the deterministic chain on one case and convert the result to the cache's compact form.

    Args:
        item: a data list item.
        head: the deterministic transforms (a ``Compose`` or a callable on the item).

    Returns:
        ``(arrays, meta)``: ``image`` (float16), ``label`` (packed uint8, if labelled), ``fg_indices`` and
        ``bg_indices`` (int64, if the chain computes them); meta: case id, shapes, affine, float16 error.

    Raises:
        ValueError: the normalised image does not fit in float16 (names the case).
    """
    d = head(dict(item))
    image = d["image"]
    image32 = np.asarray(image.detach().cpu() if isinstance(image, torch.Tensor) else image, dtype=np.float32)
    image16 = image32.astype(np.float16)
    if not np.isfinite(image16).all():
        raise ValueError(
            f"case {case_key(item)!r}: normalised intensities up to {np.abs(image32).max():.4g} overflow float16"
        )
    arrays: dict[str, np.ndarray] = {"image": image16}
    meta: dict[str, Any] = {
        "case_id": case_key(item),
        "image_shape": list(image16.shape),
        "image_max_abs_error": float(np.abs(image16.astype(np.float32) - image32).max()) if image32.size else 0.0,
        "affine": np.asarray(getattr(image, "affine", np.eye(4)), dtype=np.float64).tolist(),
    }
    if "label" in d:
        arrays["label"] = pack_regions(d["label"])
        meta["n_regions"] = int(d["label"].shape[0])
    for key in ("fg_indices", "bg_indices"):
        if key in d:
            arrays[key] = np.asarray(torch.as_tensor(d[key]).cpu(), dtype=np.int64).ravel()
    return arrays, meta


def read_entry_meta(entry_dir: str | os.PathLike) -> dict[str, Any] | None:
    """An entry's ``meta.json``, or None if the entry is absent or unreadable."""
    return read_meta(entry_dir)


def _head(kind: str, patch_size: Sequence[int], data_options: Mapping[str, Any]) -> Compose:
    return Compose(cache_chains(kind, patch_size, 1, data_options)[0])


# A pool process's chain, built once by its initializer. Never reused across fills: the checked loader fails
# every call after its first failure, so a chain that met a bad file must not outlive its fill.
_POOL_HEAD: list[Compose] = []


def _init_pool(kind: str, patch_size: Sequence[int], data_options: Mapping[str, Any]) -> None:
    _POOL_HEAD[:] = [_head(kind, patch_size, data_options)]


@dataclasses.dataclass
class FillReport:
    """What :func:`fill_cache` found and did on this rank's shard.

    Attributes:
        valid: entries found valid (used as they are).
        built: case ids of entries built because absent.
        rebuilt: ``(case id, reason)`` of entries rebuilt because stale, damaged or incomplete.
    """

    valid: int = 0
    built: list[str] = dataclasses.field(default_factory=list)
    rebuilt: list[tuple[str, str]] = dataclasses.field(default_factory=list)


def _entry_problem(entry_dir: Path, key: str, kind: str, item: Mapping[str, Any], verify: str) -> str | None:
    """Why an entry cannot serve ``item`` (None: it can); refreshes the stored stat of unchanged inputs."""
    meta = read_meta(entry_dir)
    if meta is None:
        return "meta.json missing or unreadable" if entry_dir.exists() else _ABSENT
    if meta.get("format") != CACHE_FORMAT_VERSION:
        return f"cache format {meta.get('format')} (this version reads {CACHE_FORMAT_VERSION})"
    if meta.get("key") != key or meta.get("kind") != kind:
        return "built with other preprocessing settings"
    cause, refreshed = fingerprint_problem(meta.get("inputs"), item, verify)
    if cause:
        return cause
    if refreshed is not None:  # before the verification, whose memo records meta.json's stat
        _refresh_inputs(entry_dir, meta, refreshed)
    # the checksums last: they read the whole entry, which a changed input makes pointless
    return entry_problem(entry_dir, kind, labelled="label" in item)


def _refresh_inputs(entry_dir: Path, meta: dict[str, Any], fingerprint: list) -> None:
    # Only the stat changed (a copy, a touch): store it so the next check is a stat again. Skipped while
    # another process holds the entry (it is rebuilding or refreshing it).
    lock = entry_lock(entry_dir)
    try:
        lock.acquire(timeout_s=0)
    except LockHeldError:
        return
    try:
        rewrite_meta(entry_dir, {**meta, "inputs": fingerprint})
    finally:
        lock.release()


def _estimated_entry_bytes(item: Mapping[str, Any]) -> int:
    """An entry's size before it is built, from the input headers: float16 channels and a uint8 label per
    voxel (before resampling and cropping; the indices are small next to them)."""
    shapes = [load_nifti(p).shape for p in input_paths({"image": item["image"]})]
    channels = sum(shape[3] if len(shape) > 3 else 1 for shape in shapes)
    return int(np.prod(shapes[0][:3])) * (2 * channels + 1)


def _build_entry(job: tuple, head: Compose | None = None) -> str:
    item, entry_dir, kind, key, verify = job
    entry_dir = Path(entry_dir)
    try:
        lock = entry_lock(entry_dir).acquire(timeout_s=None)
    except OSError as exc:
        if is_disk_full(exc):  # not even the lock file's few bytes fit
            raise disk_full_error(entry_dir, case_key(item), _estimated_entry_bytes(item)) from exc
        raise CacheEntryError(entry_dir, case_key(item), f"cannot take the entry's lock: {exc}") from exc
    with lock:
        # another process may have built it while we waited for the lock: use its entry
        if _entry_problem(entry_dir, key, kind, item, verify) is None:
            return str(entry_dir)
        fingerprint = input_fingerprint(item)  # before reading: a file changed meanwhile invalidates the entry
        arrays, meta = preprocess_case(item, head if head is not None else _POOL_HEAD[0])
        meta = {"format": CACHE_FORMAT_VERSION, "key": key, "kind": kind, "inputs": fingerprint, **meta}
        write_entry(entry_dir, arrays, meta)
    return str(entry_dir)


def _note(report: FillReport, entry_dir: Path, item: Mapping[str, Any], cause: str) -> None:
    case_id = case_key(item)
    if cause == _ABSENT:
        report.built.append(case_id)
        return
    report.rebuilt.append((case_id, cause))
    # an older format is an upgrade, not damage: one line per case would flood the log
    log = logger.info if cause.startswith("cache format") else logger.warning
    log("cache entry %s of case %s: %s; rebuilding", entry_dir, case_id, cause)


def fill_cache(
    items: Sequence[Mapping[str, Any]],
    kind: str,
    cache_dir: str | os.PathLike | None = None,
    patch_size: Sequence[int] = (48, 48, 48),
    data_options: Mapping[str, Any] | None = None,
    num_workers: int = 1,
    progress: bool = True,
    distributed: bool = True,
    verify: str = "stat",
    report: FillReport | None = None,
) -> list[dict[str, Any]]:
    """Make sure every case has a valid entry (building the missing, stale or damaged ones) and list the entries.

    Under ``torch.distributed`` each rank checks and builds the entries of its shard (``items[rank::world]``),
    then all wait at a barrier; every rank returns the whole list (entry paths only: nothing is loaded). The
    entries checked here are memoised as verified, so this process's DataLoader workers do not check them
    again.

    Args:
        items: the data list (``image``, optional ``label`` and ``case_id``: without it, the case is named by
            its first input file, :func:`~brats_cggm.brats.data.cache.fingerprint.case_key`).
        kind: one of :data:`CACHE_KINDS`.
        cache_dir: the cache's root folder; None for :func:`default_cache_dir`.
        patch_size: the training patch.
        data_options: keyword arguments of :func:`~brats_cggm.brats.data.transforms.preprocessing`.
        num_workers: processes building entries (1: in this process).
        progress: show a progress bar with an ETA (tqdm) while building.
        distributed: shard the building over the ranks of an initialised process group.
        verify: ``cache_verify``, one of :data:`VERIFY_MODES` (how input files are compared).
        report: filled with what was found valid, built and rebuilt (why).

    Returns:
        One item per case, in ``items``' order: ``{"entry": folder, "case_id": case_key(item)}``.

    Raises:
        FileNotFoundError: an input file is missing.
        InputFileError: an input file is bad (from the checked loading).
        CacheEntryError: an entry cannot be written (no space left, ...) or is bad right after building.
        ValueError: an unknown ``verify``.
    """
    from brats_cggm.core.distributed import barrier, data_barrier_timeout_s, get_rank, get_world_size, is_distributed

    if verify not in VERIFY_MODES:
        raise ValueError(f"cache_verify: {verify!r}: expected one of {VERIFY_MODES}")
    report = report if report is not None else FillReport()
    data_options = dict(data_options or {})
    key = preprocessing_key(kind, patch_size, data_options)
    folder = Path(cache_dir if cache_dir is not None else default_cache_dir()).expanduser() / f"{kind}-{key}"
    folder.mkdir(parents=True, exist_ok=True)
    sharded = distributed and is_distributed()
    rank, world = (get_rank(), get_world_size()) if sharded else (0, 1)
    if rank == 0:
        remove_dead_temporaries(folder)
    if sharded:
        barrier("before building the disk cache", data_barrier_timeout_s())
    for item in items:
        check_inputs_exist(item)  # every missing file named before any building
    entries, jobs = [], []
    for index, item in enumerate(items):
        entry_dir = folder / entry_name(item)
        # never None: the DataLoader's collate refuses None (items without case_id are named by their files)
        entries.append({"entry": str(entry_dir), "case_id": case_key(item)})
        if index % world != rank:
            continue
        cause = _entry_problem(entry_dir, key, kind, item, verify)
        if cause is None:
            report.valid += 1
            continue
        _note(report, entry_dir, item, cause)
        jobs.append((dict(item), str(entry_dir), kind, key, verify))
    chain_args = (kind, list(patch_size), data_options)
    _run_jobs(jobs, chain_args, num_workers, progress and rank == 0, f"caching {kind} cases in {folder}")
    for item, job_dir, *_ in jobs:  # in this process, so that the loader's workers inherit the memo
        verify_entry(job_dir, case_key(item), kind, labelled="label" in item)
    if sharded:  # the shards take as long as their missing entries: a longer wait than a training step's
        barrier("after building the disk cache", data_barrier_timeout_s())
    return entries


def _run_jobs(jobs: list[tuple], chain_args: tuple, num_workers: int, progress: bool, description: str) -> None:
    if not jobs:
        return
    from tqdm.auto import tqdm

    bar = tqdm(total=len(jobs), desc=description, unit="case", disable=not progress)
    try:
        if num_workers <= 1:
            head = _head(*chain_args)
            for job in jobs:
                _build_entry(job, head)
                bar.update()
            return
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        # spawn: no forked copy of a parent's threads (MONAI readers, torch's pools).
        context = multiprocessing.get_context("spawn")
        workers = min(num_workers, len(jobs))
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_pool, initargs=chain_args) as pool:
            for future in as_completed([pool.submit(_build_entry, job) for job in jobs]):
                future.result()
                bar.update()
    finally:
        bar.close()


class LoadCacheEntryd(MapTransform):
    """Open a cache entry: memory-mapped image and packed label (nothing read yet), or whole tensors.

    The entry is verified (structure and checksums, :func:`~brats_cggm.brats.data.cache.integrity.verify_entry`)
    unless this process verified it before with its files unchanged.

    Args:
        key: the item key holding the entry folder.
        whole: read the whole volumes as float32 tensors (validation) instead of memory maps (training).

    Raises:
        CacheEntryError: the entry is missing, damaged or incomplete (names the entry, the case and the cause).
    """

    def __init__(self, key: str = "entry", whole: bool = False) -> None:
        super().__init__([key])
        self.key, self.whole = key, whole

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        entry = Path(d.pop(self.key))
        case_id = d.get("case_id")
        meta = verify_entry(entry, case_id)
        try:
            return self._open(entry, meta, d)
        except (OSError, ValueError, KeyError) as exc:  # changed since verified: still named, never raw
            raise CacheEntryError(entry, case_id, f"{type(exc).__name__}: {exc}") from exc

    def _open(self, entry: Path, meta: Mapping[str, Any], d: dict[Hashable, Any]) -> dict[Hashable, Any]:
        image = np.load(entry / "image.npy", mmap_mode="r")
        label = np.load(entry / "label.npy", mmap_mode="r") if "label.npy" in meta["files"] else None
        if self.whole:
            affine = torch.as_tensor(meta["affine"], dtype=torch.float64)
            d["image"] = MetaTensor(torch.from_numpy(np.asarray(image, dtype=np.float32)), affine=affine)
            if label is not None:
                d["label"] = MetaTensor(torch.from_numpy(unpack_regions(label, meta["n_regions"])), affine=affine)
            return d
        d["image"] = image
        if label is not None:
            d["label"] = label
            d["n_regions"] = meta["n_regions"]
        for name in ("fg_indices", "bg_indices"):
            if f"{name}.npy" in meta["files"]:
                d[name] = np.load(entry / f"{name}.npy")
        return d


class RandCropCachedPatchd(Randomizable, MapTransform):
    """``RandCropByPosNegLabeld`` on a memory-mapped entry, reading only the voxels of each patch.

    Centres are drawn as ``RandCropByPosNegLabeld`` draws them with precomputed indices
    (``monai.transforms.utils.generate_pos_neg_label_crop_centers``, tumour with probability
    ``pos / (pos + neg)``); each patch is then a slice of the memory maps, converted to float32 image and
    0/1 region masks. Returns ``num_samples`` dicts.

    Args:
        spatial_size: the patch.
        pos: weight of patches centred on tumour.
        neg: weight of patches centred elsewhere (inside the head).
        num_samples: patches per call.
    """

    def __init__(self, spatial_size: Sequence[int], pos: float = 1.0, neg: float = 1.0, num_samples: int = 1) -> None:
        MapTransform.__init__(self, ["image", "label"])
        self.spatial_size = [int(s) for s in spatial_size]
        if pos < 0 or neg < 0 or pos + neg == 0:
            raise ValueError(f"pos={pos} and neg={neg}: expected non-negative weights, not both zero")
        self.pos_ratio = pos / (pos + neg)
        self.num_samples = int(num_samples)

    @classmethod
    def like(cls, crop: RandCropByPosNegLabeld) -> RandCropCachedPatchd:
        """The equivalent of a ``RandCropByPosNegLabeld`` (its patch, ratio and number of samples)."""
        cropper = crop.cropper
        if isinstance(cropper.spatial_size, int):
            raise ValueError("the crop's spatial_size must be given per axis to be cached")
        instance = cls(cropper.spatial_size, pos=cropper.pos_ratio, neg=1.0 - cropper.pos_ratio)
        instance.num_samples = int(cropper.num_samples)
        return instance

    def draw_boxes(self, shape: Sequence[int], fg: np.ndarray, bg: np.ndarray) -> list[tuple[slice, ...]]:
        """The patches of one draw: ``num_samples`` boxes around foreground or background centres (``self.R``)."""
        centres = generate_pos_neg_label_crop_centers(
            self.spatial_size, self.num_samples, self.pos_ratio, shape, fg, bg, self.R
        )
        boxes = []
        for centre in centres:
            starts = [max(int(c) - s // 2, 0) for c, s in zip(centre, self.spatial_size)]
            boxes.append(tuple(slice(b, min(b + s, n)) for b, s, n in zip(starts, self.spatial_size, shape)))
        return boxes

    def __call__(self, data: Mapping[Hashable, Any]) -> list[dict[Hashable, Any]]:
        d = dict(data)
        image, label = d.pop("image"), d.pop("label")
        n_regions = int(d.pop("n_regions", len(REGIONS)))
        fg, bg = d.pop("fg_indices"), d.pop("bg_indices")
        shape = tuple(image.shape[1:])
        samples = []
        for box in self.draw_boxes(shape, fg, bg):
            sample = dict(d)
            sample["image"] = torch.from_numpy(np.asarray(image[(slice(None), *box)], dtype=np.float32))
            sample["label"] = torch.from_numpy(unpack_regions(label[box], n_regions))
            samples.append(sample)
        return samples
