"""Validation overlays in TensorBoard: one axial slice per case, the labels beside the prediction.

At each validation, the first few validation cases are drawn as one RGB image each: the FLAIR slice with the
reference regions (left) and the same slice with the predicted regions (right), each region in its colour
(:data:`REGION_COLOURS`; ET inside TC inside WT, so the inner region is painted last). The slice is the one
with the most reference tumour, so what the validation Dice scores is in view. The handler is attached to the
evaluator (a bundle's ``val_handlers``); the engine knows nothing of it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events

from brats_cggm.brats.data.labels import REGIONS
from brats_cggm.core.distributed import is_main_process

__all__ = [
    "IMAGE_TAG",
    "REGION_COLOURS",
    "ValidationImagesHandler",
    "overlay_slice",
    "tumour_slice",
    "validation_panel",
]

#: TensorBoard tag prefix of the overlays: ``val/overlay/<i>``, ``i`` the case's place in the validation set.
IMAGE_TAG = "val/overlay"

#: RGB colour of each region (in this order, an inner region's colour replaces an outer one's).
REGION_COLOURS: dict[str, tuple[int, int, int]] = {"wt": (60, 200, 60), "tc": (240, 210, 40), "et": (230, 40, 40)}

#: Weight of a region's colour over the grey image.
OVERLAY_ALPHA = 0.5

#: Columns of black between the two halves of a panel.
GAP = 2


def tumour_slice(regions: np.ndarray) -> int:
    """The axial slice (last axis) with the most voxels in any region; the middle slice when there are none.

    Args:
        regions: ``(R, X, Y, Z)`` region masks.

    Returns:
        The index along Z.
    """
    counts = (np.asarray(regions) > 0.5).any(axis=0).sum(axis=(0, 1))
    return int(counts.argmax()) if counts.any() else int(regions.shape[-1] // 2)


def _grey(image: np.ndarray) -> np.ndarray:
    """``(X, Y)`` intensities to ``[0, 1]``: the 1st to 99th percentile of the non-zero voxels (the head)."""
    image = np.asarray(image, dtype=np.float32)
    values = image[image != 0]
    if values.size == 0:
        return np.zeros_like(image)
    low, high = np.percentile(values, [1.0, 99.0])
    return np.clip((image - low) / max(float(high - low), 1e-6), 0.0, 1.0) * (image != 0)


def overlay_slice(
    image: np.ndarray, regions: np.ndarray, region_names: Sequence[str] = REGIONS, alpha: float = OVERLAY_ALPHA
) -> np.ndarray:
    """One slice as RGB: grey intensities with each region's colour blended in.

    Args:
        image: ``(X, Y)`` intensities.
        regions: ``(R, X, Y)`` masks, in the order of ``region_names``.
        region_names: the name of each mask (keys of :data:`REGION_COLOURS`; others are not drawn).
        alpha: weight of a region's colour.

    Returns:
        ``(Y, X, 3)`` uint8; for RAS-oriented voxels (as the preprocessing leaves them), anterior up and the
        patient's right on the right (neurological convention).
    """
    grey = _grey(image)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    masks = {name: np.asarray(regions[i]) > 0.5 for i, name in enumerate(region_names)}
    # each voxel takes the colour of its innermost region, blended once (blending each region over the last
    # would mix WT's green into TC's yellow and ET's red)
    colours = np.zeros_like(rgb)
    coloured = np.zeros(grey.shape, dtype=bool)
    for name, colour in REGION_COLOURS.items():
        if name in masks:
            colours[masks[name]] = np.asarray(colour, np.float32) / 255.0
            coloured |= masks[name]
    rgb[coloured] = (1 - alpha) * rgb[coloured] + alpha * colours[coloured]
    # (X, Y) to rows = Y from the top (largest Y first), columns = X
    return np.ascontiguousarray((rgb.transpose(1, 0, 2)[::-1] * 255.0).round().astype(np.uint8))


def validation_panel(
    image: torch.Tensor | np.ndarray,
    label: torch.Tensor | np.ndarray,
    pred: torch.Tensor | np.ndarray,
    channel: int = 0,
    region_names: Sequence[str] = REGIONS,
) -> np.ndarray:
    """The reference and the predicted regions on one slice of one modality, side by side.

    Args:
        image: ``(C, X, Y, Z)`` the case's modalities.
        label: ``(R, X, Y, Z)`` reference region masks.
        pred: ``(R, X, Y, Z)`` predicted region masks (thresholded).
        channel: the modality drawn.
        region_names: the regions of ``label`` and ``pred``, in order.

    Returns:
        ``(Y, 2 X + GAP, 3)`` uint8: reference left, prediction right, on :func:`tumour_slice` of the reference.
    """
    image, label, pred = (np.asarray(torch.as_tensor(a).detach().float().cpu()) for a in (image, label, pred))
    z = tumour_slice(label)
    left = overlay_slice(image[channel, ..., z], label[..., z], region_names)
    right = overlay_slice(image[channel, ..., z], pred[..., z], region_names)
    gap = np.zeros((left.shape[0], GAP, 3), np.uint8)
    return np.concatenate([left, gap, right], axis=1)


class ValidationImagesHandler:
    """Writes :func:`validation_panel` of the first ``count`` validation cases to TensorBoard at each validation.

    Tags ``val/overlay/<i>`` (``i`` from 0, the case's place in the validation set), at the evaluator's epoch
    (the trainer's, as the validation scalars). Only rank 0 writes. Attach it before a handler that frees the
    iteration's output (:class:`~brats_cggm.engine.validation.ReleaseIterationData`).

    Args:
        summary_writer: a ``SummaryWriter``.
        count: cases drawn per validation; 0 draws none (the handler attaches nothing).
        modalities: the image channels' modality names.
        modality: the one drawn (``flair``); the first channel when it is not among ``modalities``.
        image_key: the output's image, ``(C, X, Y, Z)`` per case.
        label_key: the output's reference region masks.
        pred_key: the output's predicted region masks (after the threshold).
        tag: the tag prefix.
    """

    def __init__(
        self,
        summary_writer: Any,
        count: int = 2,
        modalities: Sequence[str] = ("flair", "t1ce", "t1", "t2"),
        modality: str = "flair",
        image_key: str = "image",
        label_key: str = "label",
        pred_key: str = "pred",
        tag: str = IMAGE_TAG,
    ) -> None:
        if int(count) < 0:
            raise ValueError(f"tensorboard_images must be 0 or more, got {count}")
        self.summary_writer = summary_writer
        self.count = int(count)
        self.channel = list(modalities).index(modality) if modality in modalities else 0
        self.image_key, self.label_key, self.pred_key = image_key, label_key, pred_key
        self.tag = tag
        self.drawn = 0

    def attach(self, engine: Engine) -> None:
        """Register on ``engine``'s (the evaluator's) run start and iteration ends; nothing when ``count`` is 0.

        Args:
            engine: the evaluator.
        """
        if self.count == 0:
            return
        engine.add_event_handler(Events.STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def reset(self, engine: Engine) -> None:
        """Start counting the cases of a new validation again."""
        self.drawn = 0

    def __call__(self, engine: Engine) -> None:
        """Draw the iteration's cases while fewer than ``count`` were drawn in this validation.

        Args:
            engine: the evaluator; its ``state.output`` is the decollated cases (or one dict of a batch).
        """
        if self.drawn >= self.count or not is_main_process():
            return
        output: Any = engine.state.output
        cases = output if isinstance(output, list) else _decollate(output, self.image_key)
        for case in cases:
            if self.drawn >= self.count:
                break
            panel = validation_panel(case[self.image_key], case[self.label_key], case[self.pred_key], self.channel)
            self.summary_writer.add_image(
                f"{self.tag}/{self.drawn}", panel, global_step=engine.state.epoch, dataformats="HWC"
            )
            self.drawn += 1


def _decollate(output: Mapping[str, Any] | None, image_key: str) -> list[Mapping[str, Any]]:
    """The cases of a batched output dict (``decollate=False``): one dict per batch item."""
    if not output or image_key not in output:
        return []
    batch = len(output[image_key])
    return [{k: v[i] for k, v in output.items() if isinstance(v, torch.Tensor)} for i in range(batch)]
