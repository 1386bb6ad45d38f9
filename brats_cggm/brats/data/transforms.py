"""BraTS transform chains, shared by training, validation and inference so they cannot drift apart."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import ImageReader
from monai.transforms import (
    Compose,
    CropForegroundd,
    DeleteItemsd,
    EnsureTyped,
    LoadImaged,
    MapTransform,
    NormalizeIntensityd,
    Orientationd,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandScaleIntensityd,
    RandShiftIntensityd,
    Spacingd,
    SpatialPadd,
)
from monai.transforms.utils import map_binary_to_indices

from brats_cggm.brats.data.labels import ConvertToRegionsd, check_labels
from brats_cggm.brats.data.nifti_checks import (
    InputFileError,
    check_affine,
    check_same_grid,
    check_volume_values,
    load_checked_volume,
    read_checked_header,
)

__all__ = [
    "CropCentreIndicesd",
    "LoadCheckedImaged",
    "ReorderChannelsd",
    "SpacingKeepingPathsd",
    "inference_transforms",
    "preprocessing",
    "train_transforms",
    "val_transforms",
]


class ReorderChannelsd(MapTransform):
    """Reorder (and select) the channels of ``keys``: channel i of the output is ``order[i]`` of the input.

    Used for MSD Task01 4-D files, whose channels (FLAIR, T1w, T1gd, T2w) differ from the network's
    modality order.
    """

    def __init__(self, keys: KeysCollection, order: Sequence[int], allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.order = list(order)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = d[key][self.order]
        return d


class LoadCheckedImaged(MapTransform):
    """``LoadImaged`` (channel first, image only) that checks what it loaded and names the file at fault.

    Checks, with the functions of :mod:`brats_cggm.brats.data.nifti_checks` that ``brats-cggm-infer`` uses:
    every image channel is finite and not all zero, the affines are finite and invertible, and the labels
    hold only the values of their convention (the error says which convention they fit). The checks work
    on the arrays just loaded, so they cost no extra read; as the first transform of the deterministic
    part of a chain they run once per case, when ``CacheDataset`` fills its cache. Only when loading
    fails are the case's files read again, one by one, to find the one at fault (truncated, corrupt,
    unreadable, of the wrong dimensionality or on another grid).

    After one failure, every later call fails at once without reading anything. MONAI's cache threads are
    not joined when a case fails, so the next case would still be processed while the error ends the
    process; torch code running in that thread at interpreter exit aborts the process (SIGABRT) instead of
    letting it exit with the error.

    Args:
        keys: the image key and, when labels are loaded, the label key.
        label_convention: convention the labels must follow; None skips the label check.
        channel_order: for a 4-D (MSD) image, the channels used (the ones checked); None for all.
        image_key: which of ``keys`` is the image (a path, or a list of paths stacked as channels).
        label_key: which of ``keys`` is the label map.
        reader: the ``ImageReader`` of ``LoadImaged``; MONAI's choice by file name when None.
    """

    def __init__(
        self,
        keys: KeysCollection,
        label_convention: str | None = None,
        channel_order: Sequence[int] | None = None,
        image_key: str = "image",
        label_key: str = "label",
        reader: ImageReader | None = None,
    ) -> None:
        super().__init__(keys)
        # MONAI's annotation omits the ImageReader instances LoadImaged documents and accepts
        self.loader = LoadImaged(keys=keys, reader=reader, ensure_channel_first=True, image_only=True)  # type: ignore[arg-type]
        self.label_convention = label_convention
        self.channel_order = None if channel_order is None else [int(c) for c in channel_order]
        self.image_key, self.label_key = image_key, label_key
        self.failure: str | None = None

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        if self.failure is not None:
            raise RuntimeError(f"not loading {data.get(self.image_key)}: an earlier case failed ({self.failure})")
        try:
            return self._load(data)
        except Exception as exc:
            self.failure = " ".join(str(exc).split())
            raise

    def _ndim(self, key: Hashable, path: Any) -> int:
        return 4 if key == self.image_key and isinstance(path, str) else 3

    def _channels_needed(self, ndim: int) -> int:
        return max(self.channel_order) + 1 if ndim == 4 and self.channel_order else 1

    def _load(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        paths = {key: data[key] for key in self.key_iterator(dict(data))}
        try:
            d = self.loader(data)
        except Exception as exc:
            for key, path in paths.items():
                self._find_bad_file(key, path)
            raise RuntimeError(f"cannot load {list(paths.values())}: {type(exc).__name__}: {exc}") from exc
        for key, path in paths.items():
            files = [path] if isinstance(path, str) else [str(p) for p in path]
            loaded, ndim = d[key], self._ndim(key, path)
            # A 4-D file among 3-D ones has its extra volumes as channels; a 3-D one read as 4-D, too few.
            expected = len(files) if ndim == 3 else self._channels_needed(ndim)
            if loaded.ndim != 4 or (loaded.shape[0] != expected if ndim == 3 else loaded.shape[0] < expected):
                self._find_bad_file(key, path)
                raise InputFileError(files[0], f"loaded as shape {tuple(loaded.shape)}, expected {expected} channel(s)")
            check_affine(files[0], loaded.affine)
            if key == self.label_key:
                if self.label_convention is not None:
                    try:
                        check_labels(loaded, self.label_convention, files[0])
                    except ValueError as exc:
                        raise InputFileError(files[0], str(exc).removeprefix(f"{files[0]}: ")) from None
            elif ndim == 4:
                for c in self.channel_order or range(loaded.shape[0]):
                    check_volume_values(files[0], loaded[c], f"channel {c}")
            else:
                for file, channel in zip(files, loaded, strict=True):
                    check_volume_values(file, channel)
        return d

    def _find_bad_file(self, key: Hashable, path: Any) -> None:
        # Only after a failure: read each file alone, headers first, to name the one at fault.
        files = [path] if isinstance(path, str) else [str(p) for p in path]
        ndim = self._ndim(key, path)
        needed = self._channels_needed(ndim)
        headers = [(f, read_checked_header(f, ndim=ndim, min_channels=needed)) for f in files]
        check_same_grid(headers)
        for f in files:
            load_checked_volume(f, ndim=ndim, min_channels=needed, check_values=False)


class SpacingKeepingPathsd(Spacingd):
    """``Spacingd`` that leaves alone the entries named ``<key>_...`` that are not meta dictionaries.

    MONAI's ``Spacingd`` (1.6) updates every entry whose name starts with ``<key>_`` as if it were the key's
    meta dictionary, so an item carrying a file name there fails (``'str' object has no attribute 'update'``):
    MONAI Label's inference adds ``image_path`` to every request (``BasicInferTask.__call__``,
    ``monailabel/tasks/infer/basic_infer.py``). Such entries are set aside for the call and put back; the
    resampling, its trace and its inverse are ``Spacingd``'s.
    """

    def __call__(self, data: Mapping[Hashable, Any], lazy: bool | None = None) -> dict[Hashable, Any]:
        d = dict(data)
        prefixes = tuple(f"{key}_" for key in self.keys)
        aside = {
            k: d.pop(k)
            for k in list(d)
            if isinstance(k, str) and k.startswith(prefixes) and not isinstance(d[k], Mapping)
        }
        out = dict(super().__call__(d, lazy=lazy))
        out.update(aside)
        return out


class CropCentreIndicesd(MapTransform):
    """Tumour and background voxel indices for ``RandCropByPosNegLabeld``, computed once and thinned.

    Without them the random crop scans the whole volume for every patch. Placed before the first random
    transform, the indices land in ``CacheDataset``'s cache; thinning to ``max_indices`` evenly spaced
    voxels per class keeps that cache small on full-size BraTS volumes (millions of background voxels).

    Args:
        label_key: the region label (tumour = any region).
        image_key: background is restricted to voxels where some channel exceeds ``image_threshold``.
        image_threshold: see ``image_key``.
        max_indices: the most indices kept per class.
        fg_key: where the tumour indices go.
        bg_key: where the background indices go.
    """

    def __init__(
        self,
        label_key: str = "label",
        image_key: str = "image",
        image_threshold: float = 0.0,
        max_indices: int = 10000,
        fg_key: str = "fg_indices",
        bg_key: str = "bg_indices",
    ) -> None:
        super().__init__([label_key])
        self.label_key, self.image_key, self.image_threshold = label_key, image_key, image_threshold
        self.max_indices, self.fg_key, self.bg_key = max_indices, fg_key, bg_key

    def _thin(self, indices: NdarrayOrTensor) -> torch.Tensor:
        indices = torch.as_tensor(indices)
        if len(indices) <= self.max_indices:
            return indices
        return indices[torch.linspace(0, len(indices) - 1, self.max_indices).long()]

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        fg, bg = map_binary_to_indices(d[self.label_key], d[self.image_key], self.image_threshold)
        d[self.fg_key], d[self.bg_key] = self._thin(fg), self._thin(bg)
        return d


def preprocessing(
    keys: Sequence[str] = ("image", "label"),
    label_convention: str = "brats2021",
    channel_order: Sequence[int] | None = None,
    axcodes: str = "RAS",
    pixdim: Sequence[float] | None = None,
    crop_foreground: bool = True,
    reader: ImageReader | None = None,
    spacing_transform: type[Spacingd] = Spacingd,
) -> list:
    """The deterministic part of every chain: checked loading, channels, regions, orientation, spacing, crop, normalise.

    Args:
        keys: ``"image"`` and, when labels are used, ``"label"``.
        label_convention: the label file's convention (see :mod:`brats_cggm.brats.data.labels`).
        channel_order: channel indices picking the modalities out of a 4-D image (MSD), or None.
        axcodes: orientation every case is brought to.
        pixdim: target voxel spacing in mm, or None to keep the input's.
        crop_foreground: crop to the head's bounding box (all channels non-zero anywhere).
        reader: the loading step's ``ImageReader`` (e.g. one holding images already read); MONAI's choice
            by file name when None.
        spacing_transform: the resampling step's class (:func:`inference_transforms`: :class:`SpacingKeepingPathsd`;
            the training and validation chains keep ``Spacingd``, whose name is part of their disk cache's key).

    Returns:
        A list of transforms, to be extended or wrapped in ``Compose``.
    """
    keys = list(keys)
    has_label = "label" in keys
    transforms: list = [
        LoadCheckedImaged(
            keys=keys,
            label_convention=label_convention if has_label else None,
            channel_order=channel_order,
            reader=reader,
        )
    ]
    if channel_order is not None:
        transforms.append(ReorderChannelsd(keys="image", order=channel_order))
    if has_label:
        transforms.append(ConvertToRegionsd(keys="label", convention=label_convention))
    transforms.append(Orientationd(keys=keys, axcodes=axcodes, labels=None))
    if pixdim is not None:
        modes = ["bilinear", "nearest"] if has_label else ["bilinear"]
        transforms.append(spacing_transform(keys=keys, pixdim=pixdim, mode=modes))
    if crop_foreground:
        transforms.append(CropForegroundd(keys=keys, source_key="image", allow_smaller=True))
    transforms += [
        NormalizeIntensityd(keys="image", nonzero=True, channel_wise=True),
        EnsureTyped(keys=keys, dtype=torch.float32, track_meta=True),
    ]
    return transforms


def train_transforms(
    patch_size: Sequence[int] = (48, 48, 48),
    num_samples: int = 2,
    pos: float = 2.0,
    neg: float = 1.0,
    **kwargs,
) -> Compose:
    """Preprocessing, then foreground-aware random patches, flips and intensity jitter.

    Args:
        patch_size: the training patch.
        num_samples: patches drawn per case and iteration.
        pos: weight of patches centred on tumour (any region).
        neg: weight of patches centred elsewhere (inside the head).
        kwargs: forwarded to :func:`preprocessing`.
    """
    return Compose(
        [
            *preprocessing(keys=("image", "label"), **kwargs),
            SpatialPadd(keys=["image", "label"], spatial_size=patch_size),
            CropCentreIndicesd(label_key="label", image_key="image", image_threshold=0.0),
            RandCropByPosNegLabeld(
                keys=["image", "label"],
                label_key="label",
                spatial_size=patch_size,
                pos=pos,
                neg=neg,
                num_samples=num_samples,
                fg_indices_key="fg_indices",
                bg_indices_key="bg_indices",
            ),
            DeleteItemsd(keys=["fg_indices", "bg_indices"]),
            RandFlipd(keys=["image", "label"], prob=0.5, spatial_axis=0),
            RandFlipd(keys=["image", "label"], prob=0.5, spatial_axis=1),
            RandFlipd(keys=["image", "label"], prob=0.5, spatial_axis=2),
            RandScaleIntensityd(keys="image", factors=0.1, prob=1.0),
            RandShiftIntensityd(keys="image", offsets=0.1, prob=1.0),
        ]
    )


def val_transforms(**kwargs) -> Compose:
    """Preprocessing of image and label for whole-volume validation."""
    return Compose(preprocessing(keys=("image", "label"), **kwargs))


def inference_transforms(**kwargs) -> Compose:
    """Preprocessing of the image alone, invertible with ``monai.transforms.Invertd``; its resampling step
    accepts items with file names beside the image (:class:`SpacingKeepingPathsd`: MONAI Label's requests)."""
    return Compose(preprocessing(keys=("image",), spacing_transform=SpacingKeepingPathsd, **kwargs))
