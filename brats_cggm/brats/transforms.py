"""BraTS transform chains, shared by training, validation and inference so they cannot drift apart."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import torch
from monai.config import KeysCollection
from monai.transforms import (
    Compose,
    CropForegroundd,
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

from brats_cggm.brats.labels import ConvertToRegionsd

__all__ = ["ReorderChannelsd", "inference_transforms", "preprocessing", "train_transforms", "val_transforms"]


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
            RandCropByPosNegLabeld(
                keys=["image", "label"],
                label_key="label",
                spatial_size=patch_size,
                pos=pos,
                neg=neg,
                num_samples=num_samples,
                image_key="image",
                image_threshold=0.0,
            ),
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
