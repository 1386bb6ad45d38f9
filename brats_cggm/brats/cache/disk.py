"""A persistent, memory-mapped on-disk cache of the deterministic BraTS preprocessing.

``CacheDataset`` keeps every preprocessed case in memory on every rank: about 135 MB per full-size BraTS case,
~170 GB per rank for BraTS 2021's 1,251 cases. This module instead runs the deterministic part of the chains of
:mod:`brats_cggm.brats.transforms` (every transform before the first random one: checked loading, regions,
orientation, spacing, foreground crop, normalisation, padding, crop-centre indices) once per case and stores
the result in a compact form, one folder per case::

    <cache_dir>/<kind>-<settings key>/<case id>-<paths hash>/
        image.npy        float16 (C, X, Y, Z): the normalised image
        label.npy        uint8 (X, Y, Z): the regions as bits (bit i = region i of REGIONS)
        fg_indices.npy   int64: flat indices of tumour voxels (training entries only)
        bg_indices.npy   int64: flat indices of background voxels inside the head (training entries only)
        meta.json        format version, settings key, input fingerprint, affine, shape, float16 error

Training reads entries through :class:`LoadCacheEntryd` (memory-mapped, nothing read yet) and
:class:`RandCropCachedPatchd` (reads only the voxels of each patch), then the random tail of
:func:`~brats_cggm.brats.transforms.train_transforms` unchanged, so memory per rank does not grow with the
number of cases.

Validity. The folder of a kind holds entries made with one set of preprocessing settings (its name is a hash
of them, :func:`preprocessing_key`); an entry is used only if its ``meta.json`` has this format version, this
key and the input files' current sizes and modification times (:func:`input_fingerprint`); any other entry is
rebuilt. Entries are written into a temporary folder that is renamed into place once complete, so a killed
fill leaves at most a ``.tmp.*`` folder, which is never read and is removed by the next fill.

Precision. ``float16`` keeps 11 significant bits: a normalised intensity ``x`` (z-scores, |x| < 16 in
practice) is stored with an error of at most ``|x| * 2**-11`` (<= 0.0078 for |x| < 16), measured per case
and recorded as ``meta["image_max_abs_error"]``: far below the training's intensity jitter (+-10 % scale,
+-0.1 shift). Labels and indices are exact.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, MapTransform, RandCropByPosNegLabeld, Randomizable
from monai.transforms.utils import generate_pos_neg_label_crop_centers

from brats_cggm.brats.labels import REGIONS
from brats_cggm.brats.transforms import train_transforms, val_transforms

__all__ = [
    "CACHE_FORMAT_VERSION",
    "CACHE_KINDS",
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

#: Bumped whenever the layout or the meaning of an entry changes: older entries are then rebuilt.
CACHE_FORMAT_VERSION = 1

#: The chains an entry can come from: ``train`` (padded, with crop-centre indices) or ``val`` (whole volume).
CACHE_KINDS = ("train", "val")

_META = "meta.json"
_TMP_PREFIX = ".tmp."


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
    :func:`~brats_cggm.brats.transforms.train_transforms` (``kind="train"``) or
    :func:`~brats_cggm.brats.transforms.val_transforms` (``kind="val"``, all deterministic); the split is
    taken from those functions, so the cache cannot drift from the in-memory chains.

    Args:
        kind: one of :data:`CACHE_KINDS`.
        patch_size: the training patch (padding and crops).
        num_samples: patches per case and draw.
        data_options: keyword arguments of :func:`~brats_cggm.brats.transforms.preprocessing`.

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
        data_options: keyword arguments of :func:`~brats_cggm.brats.transforms.preprocessing`.

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


def _input_paths(item: Mapping[str, Any]) -> list[str]:
    paths: list[str] = []
    for key in ("image", "label"):
        value = item.get(key)
        if value is None:
            continue
        paths += [value] if isinstance(value, (str, os.PathLike)) else list(value)
    return [os.path.abspath(str(p)) for p in paths]


def input_fingerprint(item: Mapping[str, Any]) -> list[list]:
    """The case's input files with their sizes and modification times: an entry is valid while these match.

    Args:
        item: a data list item (``image``: a path or a list of paths; optional ``label``).

    Returns:
        ``[[absolute path, size in bytes, mtime in ns], ...]``.

    Raises:
        FileNotFoundError: an input file is missing (named).
    """
    fingerprint = []
    for path in _input_paths(item):
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: input file of case {item.get('case_id')!r} does not exist") from None
        fingerprint.append([path, int(stat.st_size), int(stat.st_mtime_ns)])
    return fingerprint


def entry_name(item: Mapping[str, Any]) -> str:
    """The entry folder's name: the case id and a hash of the input paths (two data sets never collide)."""
    digest = hashlib.sha256("\n".join(_input_paths(item)).encode()).hexdigest()[:12]
    case_id = str(item.get("case_id") or Path(_input_paths(item)[0]).name)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in case_id).lstrip(".")
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
            f"case {item.get('case_id')!r}: normalised intensities up to {np.abs(image32).max():.4g} overflow float16"
        )
    arrays: dict[str, np.ndarray] = {"image": image16}
    meta: dict[str, Any] = {
        "case_id": item.get("case_id"),
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


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_entry(entry_dir: str | os.PathLike, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> Path:
    """Write one entry atomically: a temporary sibling folder, fsynced, renamed to ``entry_dir``.

    An existing (stale) entry is moved aside first and removed after the rename. A write killed at any point
    leaves ``entry_dir`` either absent, or the old entry, or the new complete one, plus perhaps a
    ``.tmp.<pid>.*`` folder that :func:`fill_cache` removes.

    Args:
        entry_dir: the entry's folder.
        arrays: ``.npy`` files to write, by name.
        meta: written as ``meta.json`` (last).

    Returns:
        ``entry_dir``.
    """
    entry_dir = Path(entry_dir)
    entry_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = entry_dir.parent / f"{_TMP_PREFIX}{os.getpid()}.{secrets.token_hex(4)}.{entry_dir.name}"
    tmp.mkdir()
    try:
        for name, array in arrays.items():
            with open(tmp / f"{name}.npy", "wb") as f:
                np.save(f, np.ascontiguousarray(array), allow_pickle=False)
                f.flush()
                os.fsync(f.fileno())
        with open(tmp / _META, "w", encoding="utf-8") as f:
            json.dump(dict(meta), f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(tmp)
        old = None
        if entry_dir.exists():
            old = entry_dir.parent / f"{_TMP_PREFIX}{os.getpid()}.{secrets.token_hex(4)}.old.{entry_dir.name}"
            os.replace(entry_dir, old)
        os.replace(tmp, entry_dir)
        _fsync_dir(entry_dir.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return entry_dir


def read_entry_meta(entry_dir: str | os.PathLike) -> dict[str, Any] | None:
    """An entry's ``meta.json``, or None if the entry is absent or unreadable."""
    try:
        with open(Path(entry_dir) / _META, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _entry_is_valid(entry_dir: Path, key: str, fingerprint: list[list]) -> bool:
    meta = read_entry_meta(entry_dir)
    return (
        meta is not None
        and meta.get("format") == CACHE_FORMAT_VERSION
        and meta.get("key") == key
        and meta.get("inputs") == fingerprint
        and (entry_dir / "image.npy").is_file()
    )


def _remove_dead_temporaries(folder: Path) -> None:
    # Left by a killed fill; a live process's temporaries (a concurrent fill) are kept.
    if not folder.is_dir():
        return
    for tmp in folder.glob(f"{_TMP_PREFIX}*"):
        try:
            pid = int(tmp.name[len(_TMP_PREFIX) :].split(".")[0])
        except ValueError:
            continue
        if pid != os.getpid():
            try:
                os.kill(pid, 0)
                continue
            except ProcessLookupError:
                pass
            except PermissionError:
                continue
        shutil.rmtree(tmp, ignore_errors=True)


def _head(kind: str, patch_size: Sequence[int], data_options: Mapping[str, Any]) -> Compose:
    return Compose(cache_chains(kind, patch_size, 1, data_options)[0])


# A pool process's chain, built once by its initializer. Never reused across fills: the checked loader fails
# every call after its first failure, so a chain that met a bad file must not outlive its fill.
_POOL_HEAD: list[Compose] = []


def _init_pool(kind: str, patch_size: Sequence[int], data_options: Mapping[str, Any]) -> None:
    _POOL_HEAD[:] = [_head(kind, patch_size, data_options)]


def _build_entry(job: tuple, head: Compose | None = None) -> str:
    item, entry_dir, kind, key, fingerprint = job
    arrays, meta = preprocess_case(item, head if head is not None else _POOL_HEAD[0])
    meta = {"format": CACHE_FORMAT_VERSION, "key": key, "kind": kind, "inputs": fingerprint, **meta}
    write_entry(entry_dir, arrays, meta)
    return entry_dir


def fill_cache(
    items: Sequence[Mapping[str, Any]],
    kind: str,
    cache_dir: str | os.PathLike | None = None,
    patch_size: Sequence[int] = (48, 48, 48),
    data_options: Mapping[str, Any] | None = None,
    num_workers: int = 1,
    progress: bool = True,
    distributed: bool = True,
) -> list[dict[str, Any]]:
    """Make sure every case has a valid entry (building the missing or stale ones) and list the entries.

    Under ``torch.distributed`` each rank builds the missing entries of its shard (``items[rank::world]``),
    then all wait at a barrier; every rank returns the whole list (entry paths only: nothing is loaded).

    Args:
        items: the data list (``case_id``, ``image``, optional ``label``).
        kind: one of :data:`CACHE_KINDS`.
        cache_dir: the cache's root folder; None for :func:`default_cache_dir`.
        patch_size: the training patch.
        data_options: keyword arguments of :func:`~brats_cggm.brats.transforms.preprocessing`.
        num_workers: processes building entries (1: in this process).
        progress: show a progress bar with an ETA (tqdm) while building.
        distributed: shard the building over the ranks of an initialised process group.

    Returns:
        One item per case, in ``items``' order: ``{"entry": folder, "case_id": ...}``.

    Raises:
        FileNotFoundError: an input file is missing.
        InputFileError: an input file is bad (from the checked loading).
    """
    from brats_cggm.core.distributed import barrier, data_barrier_timeout_s, get_rank, get_world_size, is_distributed

    data_options = dict(data_options or {})
    key = preprocessing_key(kind, patch_size, data_options)
    folder = Path(cache_dir if cache_dir is not None else default_cache_dir()).expanduser() / f"{kind}-{key}"
    folder.mkdir(parents=True, exist_ok=True)
    sharded = distributed and is_distributed()
    rank, world = (get_rank(), get_world_size()) if sharded else (0, 1)
    if rank == 0:
        _remove_dead_temporaries(folder)
    if sharded:
        barrier("before building the disk cache", data_barrier_timeout_s())
    entries, jobs = [], []
    for index, item in enumerate(items):
        fingerprint = input_fingerprint(item)
        entry_dir = folder / entry_name(item)
        entries.append({"entry": str(entry_dir), "case_id": item.get("case_id")})
        if index % world == rank and not _entry_is_valid(entry_dir, key, fingerprint):
            jobs.append((dict(item), str(entry_dir), kind, key, fingerprint))
    chain_args = (kind, list(patch_size), data_options)
    _run_jobs(jobs, chain_args, num_workers, progress and rank == 0, f"caching {kind} cases in {folder}")
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

    Args:
        key: the item key holding the entry folder.
        whole: read the whole volumes as float32 tensors (validation) instead of memory maps (training).
    """

    def __init__(self, key: str = "entry", whole: bool = False) -> None:
        super().__init__([key])
        self.key, self.whole = key, whole

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        entry = Path(d.pop(self.key))
        meta = read_entry_meta(entry)
        if meta is None:
            raise FileNotFoundError(f"{entry}: cache entry missing or incomplete (rebuild it with brats-cggm-prepare)")
        image = np.load(entry / "image.npy", mmap_mode="r")
        label_path = entry / "label.npy"
        label = np.load(label_path, mmap_mode="r") if label_path.is_file() else None
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
            path = entry / f"{name}.npy"
            if path.is_file():
                d[name] = np.load(path)
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
        instance = cls(cropper.spatial_size, pos=cropper.pos_ratio, neg=1.0 - cropper.pos_ratio)
        instance.num_samples = int(cropper.num_samples)
        return instance

    def randomize(self, shape: Sequence[int], fg: np.ndarray, bg: np.ndarray) -> list[tuple[slice, ...]]:
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
        for box in self.randomize(shape, fg, bg):
            sample = dict(d)
            sample["image"] = torch.from_numpy(np.asarray(image[(slice(None), *box)], dtype=np.float32))
            sample["label"] = torch.from_numpy(unpack_regions(label[box], n_regions))
            samples.append(sample)
        return samples
