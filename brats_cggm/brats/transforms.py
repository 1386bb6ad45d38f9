"""BraTS transform chains, shared by training, validation and inference so they cannot drift apart."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import torch
from monai.config import KeysCollection
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

from brats_cggm.brats.labels import ConvertToRegionsd

__all__ = [
    "CropCentreIndicesd",
    "ReorderChannelsd",
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

    def _thin(self, indices: torch.Tensor) -> torch.Tensor:
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
) -> list:
    """The deterministic part of every chain: load, channel order, regions, orientation, spacing, crop, normalise.

    Args:
        keys: ``"image"`` and, when labels are used, ``"label"``.
        label_convention: the label file's convention (see :mod:`brats_cggm.brats.labels`).
        channel_order: channel indices picking the modalities out of a 4-D image (MSD), or None.
        axcodes: orientation every case is brought to.
        pixdim: target voxel spacing in mm, or None to keep the input's.
        crop_foreground: crop to the head's bounding box (all channels non-zero anywhere).

    Returns:
        A list of transforms, to be extended or wrapped in ``Compose``.
    """
    keys = list(keys)
    has_label = "label" in keys
    transforms: list = [LoadImaged(keys=keys, ensure_channel_first=True, image_only=True)]
    if channel_order is not None:
        transforms.append(ReorderChannelsd(keys="image", order=channel_order))
    if has_label:
        transforms.append(ConvertToRegionsd(keys="label", convention=label_convention))
    transforms.append(Orientationd(keys=keys, axcodes=axcodes, labels=None))
    if pixdim is not None:
        modes = ["bilinear", "nearest"] if has_label else ["bilinear"]
        transforms.append(Spacingd(keys=keys, pixdim=pixdim, mode=modes))
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
    """Preprocessing of the image alone, invertible with ``monai.transforms.Invertd``."""
    return Compose(preprocessing(keys=("image",), **kwargs))
