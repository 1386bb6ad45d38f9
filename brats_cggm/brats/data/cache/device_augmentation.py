"""The training chain's flips and intensity jitter, applied to a whole batch on the training device.

With ``device_augmentation: true`` in the bundle, the loader stops after the patch crop and the trainer's
``prepare_batch`` moves the batch to the device and draws, per sample, the same augmentations as the tail
of :func:`~brats_cggm.brats.data.transforms.train_transforms`: a flip of each spatial axis with probability 0.5
(``RandFlipd``, image and label together), ``x * (1 + f)`` with ``f ~ U(-0.1, 0.1)`` (``RandScaleIntensityd``,
``factors=0.1``, one factor for all channels) and ``x + o`` with ``o ~ U(-0.1, 0.1)`` (``RandShiftIntensityd``,
``offsets=0.1``). Draws use torch's global generator, which ``monai.utils.set_determinism`` seeds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from monai.engines.utils import default_prepare_batch
from monai.transforms import RandFlipd, RandScaleIntensityd, RandShiftIntensityd

__all__ = ["DEVICE_AUGMENTED", "augment_batch", "augmenting_prepare_batch"]

#: The transforms of the training chain that :func:`augment_batch` replaces.
DEVICE_AUGMENTED = (RandFlipd, RandScaleIntensityd, RandShiftIntensityd)


def augment_batch(
    image: torch.Tensor, label: torch.Tensor, flip_prob: float = 0.5, scale: float = 0.1, shift: float = 0.1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random flips (image and label alike) and intensity scale and shift, drawn per sample.

    Args:
        image: ``(B, C, X, Y, Z)``.
        label: ``(B, R, X, Y, Z)``.
        flip_prob: probability of flipping each spatial axis.
        scale: intensities are multiplied by ``1 + U(-scale, scale)``.
        shift: then ``U(-shift, shift)`` is added.

    Returns:
        The augmented ``(image, label)`` (new tensors on the input's device).
    """
    batch, spatial = image.shape[0], image.ndim - 2
    flips = torch.rand(batch, spatial) < flip_prob
    factors = 1.0 + (torch.rand(batch) * 2.0 - 1.0) * scale
    offsets = (torch.rand(batch) * 2.0 - 1.0) * shift
    images, labels = [], []
    for i in range(batch):
        dims = [d + 1 for d in range(spatial) if flips[i, d]]
        x, y = (image[i].flip(dims), label[i].flip(dims)) if dims else (image[i], label[i])
        images.append(x * factors[i].item() + offsets[i].item())
        labels.append(y)
    return torch.stack(images), torch.stack(labels)


def augmenting_prepare_batch(
    flip_prob: float = 0.5, scale: float = 0.1, shift: float = 0.1
) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """A trainer ``prepare_batch``: MONAI's default (to the device), then :func:`augment_batch` there.

    Args:
        flip_prob: see :func:`augment_batch`.
        scale: see :func:`augment_batch`.
        shift: see :func:`augment_batch`.

    Returns:
        ``prepare_batch(batchdata, device, non_blocking, **kwargs) -> (image, label)``.
    """

    def prepare_batch(
        batchdata: dict[str, torch.Tensor], device: Any = None, non_blocking: bool = False, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        prepared = default_prepare_batch(batchdata, device, non_blocking, **kwargs)
        if not isinstance(prepared, tuple) or prepared[1] is None:
            raise ValueError("device augmentation needs batches of images and labels")
        image, label = prepared[0], prepared[1]
        return augment_batch(image, label, flip_prob, scale, shift)

    return prepare_batch
