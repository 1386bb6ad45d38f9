"""Preprocessing on the inference device: after the read, the training chain's steps run on torch tensors there.

The inference chain (:func:`~brats_cggm.brats.data.transforms.inference_transforms`) reads the files on the
CPU (``LoadImaged``: nibabel, numpy) and then orients, resamples, crops and normalises. Those later steps are
MONAI transforms whose torch backend works on a tensor wherever it lies, and which keep it there (MONAI 1.6,
checked step by step):

- ``Orientationd``: ``torch.flip`` and ``permute`` of the data; the affine is kept on the CPU.
- ``Spacingd``: ``grid_sample`` through ``monai.networks.layers.AffineTransform`` on the tensor's device, in
  the transform's ``dtype`` (float64, as on the CPU); only the 4x4 affines go through numpy.
- ``CropForegroundd``: the bounding box from torch reductions (its corners are read back to the host, six
  scalars), then slicing; its inverse pads with ``torch.nn.functional.pad``.
- ``NormalizeIntensityd``: torch masked mean and standard deviation, per channel.
- ``EnsureTyped``, ``ReorderChannelsd``: a dtype cast and channel indexing.

No torch re-implementation is needed: :func:`on_device` moves the image to the device right after it is read,
so every later step is the training chain's own, with the same arguments, and ``Invertd`` undoes them on the
device of the prediction. :data:`DEVICE_STEPS` lists the steps checked; :func:`on_device` refuses a chain
holding another one, which could convert the volume to numpy behind the chain's back.
"""

from __future__ import annotations

import torch
from monai.transforms import (
    Compose,
    CropForegroundd,
    EnsureTyped,
    NormalizeIntensityd,
    Orientationd,
    Spacingd,
    ToDeviced,
)

from brats_cggm.brats.data.transforms import LoadCheckedImaged, ReorderChannelsd

__all__ = ["DEVICE_STEPS", "PREPROCESS_CHOICES", "on_device", "preprocessing_device"]

#: Values of ``BratsSegmenter(preprocess_on=...)`` and ``brats-cggm-infer --preprocess-on``.
PREPROCESS_CHOICES = ("auto", "cpu", "device")

#: The steps of the inference chain checked to run in torch on any device, keeping the tensor there.
DEVICE_STEPS: tuple[type, ...] = (
    ReorderChannelsd,
    Orientationd,
    Spacingd,
    CropForegroundd,
    NormalizeIntensityd,
    EnsureTyped,
)


def preprocessing_device(preprocess_on: str, device: torch.device, stitch: str = "auto") -> torch.device | None:
    """Where the preprocessing after the read, and the inversion of the prediction, run.

    Args:
        preprocess_on: ``"cpu"``: the CPU chain (the reference); ``"device"``: the device chain on ``device``
            (on the CPU too when ``device`` is the CPU: same steps, same tensors); ``"auto"``: the device chain
            when ``device`` is a GPU and ``stitch`` is not ``"cpu"`` (which asks for the volume to stay in CPU
            memory), the CPU chain otherwise.
        device: the compute device.
        stitch: the segmenter's ``stitch`` setting (see
            :func:`~brats_cggm.brats.inference.segmenter.stitch_on_cpu`).

    Returns:
        The device of the device chain, or None for the CPU chain.

    Raises:
        ValueError: for an unknown ``preprocess_on``.
    """
    if preprocess_on not in PREPROCESS_CHOICES:
        raise ValueError(f"preprocess_on must be one of {PREPROCESS_CHOICES}, got {preprocess_on!r}")
    if preprocess_on == "cpu":
        return None
    if preprocess_on == "device":
        return device
    return device if device.type == "cuda" and stitch != "cpu" else None


def on_device(preprocessing: Compose, device: str | torch.device) -> Compose:
    """``preprocessing`` with the image moved to ``device`` right after it is read.

    Args:
        preprocessing: an inference chain whose first step reads ``"image"`` (e.g.
            :func:`~brats_cggm.brats.data.transforms.inference_transforms`), its other steps among
            :data:`DEVICE_STEPS`.
        device: where the later steps run.

    Returns:
        A new chain: the read, ``ToDeviced``, the other steps unchanged. ``ToDeviced`` is not invertible, so
        ``Invertd`` passes over it and undoes the other steps where the prediction lies.

    Raises:
        ValueError: if the first step does not read the files, or a later step is not among :data:`DEVICE_STEPS`.
    """
    steps = list(preprocessing.transforms)
    if not steps or not isinstance(steps[0], LoadCheckedImaged):
        raise ValueError("on_device needs a chain whose first step reads the image (LoadCheckedImaged)")
    unchecked = [type(t).__name__ for t in steps[1:] if not isinstance(t, DEVICE_STEPS)]
    if unchecked:
        raise ValueError(f"steps not checked to run on the device: {unchecked}; see DEVICE_STEPS")
    return Compose([steps[0], ToDeviced(keys="image", device=torch.device(device)), *steps[1:]])
