"""Precomputed Food-101 features: run the frozen text and image models once, store their outputs.

Training on the stored features skips the backbones' forward passes at every step (they are frozen,
so the result is the same up to the storage precision). Each output file is HDF5 with one dataset per
sample id, ``(L, D)`` (``pooling="sequence"``: the valid tokens / all patches) or ``(D,)``
(``"cls"``: the first token; ``"mean"``: the mean over valid tokens), as
:func:`~brats_cggm.adapters.food101.load_food101` reads them (``text_features=``, ``image_features=``).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from brats_cggm.adapters.errors import AdapterDataError
from brats_cggm.adapters.food101.data import Food101Record, read_food101_records
from brats_cggm.adapters.food101.model import local_model_dir
from brats_cggm.core.files import atomic_path, refuse_existing

__all__ = ["POOLINGS", "extract_food101_features"]

logger = logging.getLogger(__name__)

POOLINGS = ("sequence", "cls", "mean")


def _pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> list[np.ndarray]:
    if pooling == "cls":
        return [h[0].numpy() for h in hidden]
    if pooling == "mean":
        weight = mask.unsqueeze(-1).to(hidden.dtype)
        return list(((hidden * weight).sum(1) / weight.sum(1).clamp_min(1.0)).numpy())
    return [h[m].numpy() for h, m in zip(hidden, mask.bool())]


@contextlib.contextmanager
def _atomic_h5(path: Path, overwrite: bool) -> Iterator[Any]:
    """An HDF5 file written under a temporary name in the target folder and renamed when complete."""
    import h5py

    refuse_existing([path], overwrite)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        yield f


def _batches(items: Sequence[Food101Record], size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


@torch.no_grad()
def _extract_text(records, model_dir, out, pooling, max_length, batch_size, device, dtype) -> int:
    from transformers import AutoModel, AutoTokenizer

    model_dir = local_model_dir(model_dir, "text_model")
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModel.from_pretrained(model_dir, local_files_only=True).to(device).eval()
    count = 0
    with _atomic_h5(out[0], out[1]) as f:
        for batch in _batches(records, batch_size):
            tokens = tokenizer(
                [r.text for r in batch], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
            )
            hidden = model(**{k: v.to(device) for k, v in tokens.items()}).last_hidden_state.float().cpu()
            for r, x in zip(batch, _pool(hidden, tokens["attention_mask"], pooling)):
                f.create_dataset(r.id, data=x.astype(dtype))
                count += 1
    return count


@torch.no_grad()
def _extract_image(records, model_dir, out, pooling, batch_size, device, dtype, on_bad_image) -> int:
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModel

    model_dir = local_model_dir(model_dir, "image_model")
    processor = AutoImageProcessor.from_pretrained(model_dir, local_files_only=True)
    model = AutoModel.from_pretrained(model_dir, local_files_only=True).to(device).eval()
    count, skipped = 0, []
    with _atomic_h5(out[0], out[1]) as f:
        for batch in _batches(records, batch_size):
            images, kept = [], []
            for r in batch:
                try:
                    with Image.open(r.image) as img:
                        images.append(img.convert("RGB"))
                except Exception as e:  # PIL raises several types for broken files
                    message = f"cannot read Food-101 image {r.image} (sample {r.id}): {type(e).__name__}: {e}"
                    if on_bad_image == "error":
                        raise AdapterDataError(message) from e
                    skipped.append(str(r.image))
                    continue
                kept.append(r)
            if not kept:
                continue
            pixels = processor(images=images, return_tensors="pt")["pixel_values"].to(device)
            hidden = model(pixel_values=pixels).last_hidden_state.float().cpu()
            mask = torch.ones(hidden.shape[:2], dtype=torch.bool)
            for r, x in zip(kept, _pool(hidden, mask, pooling)):
                f.create_dataset(r.id, data=x.astype(dtype))
                count += 1
    if skipped:
        warnings.warn(f"skipped {len(skipped)} unreadable images (no features stored): {skipped[:5]}", stacklevel=3)
    return count


def extract_food101_features(
    dataset_dir: str | Path,
    output_dir: str | Path,
    text_model: str | Path | None = None,
    image_model: str | Path | None = None,
    layout: str = "auto",
    text_pooling: str = "sequence",
    image_pooling: str = "cls",
    max_text_length: int = 64,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    dtype: str = "float16",
    on_bad_image: str = "skip",
    overwrite: bool = False,
) -> dict[str, Path]:
    """Write ``text_features.h5`` and/or ``image_features.h5`` for every sample of every split.

    Args:
        dataset_dir: the Food-101 folder (JSON or CSV layout).
        output_dir: where the files go (created).
        text_model: local folder of the text model and its tokenizer (None: no text file).
        image_model: local folder of the image model and its image processor (None: no image file).
        layout: ``"json"``, ``"csv"`` or ``"auto"``.
        text_pooling: ``"sequence"`` (valid tokens, ``(L, D)``), ``"cls"`` or ``"mean"`` (``(D,)``).
        image_pooling: the same for the image model's patch tokens (``"sequence"`` stores every patch:
            large for ViT-B, about 200 x 768 values per image).
        max_text_length: tokens per text (truncated).
        batch_size: samples per forward pass.
        device: where the models run.
        dtype: the stored precision (``"float16"`` halves the files; ``"float32"``).
        on_bad_image: an unreadable image: ``"skip"`` (no features; training then drops or rejects the
            sample by its ``on_invalid``) or ``"error"``.
        overwrite: replace existing output files (otherwise an existing file is an error).

    Returns:
        ``{"text": path, "image": path}`` for the files written.

    Raises:
        FileExistsError: an output file exists and ``overwrite`` is False.
        AdapterDataError: unreadable data (see :func:`read_food101_records`), an unreadable image with
            ``on_bad_image="error"``.
    """
    if text_model is None and image_model is None:
        raise ValueError("give text_model and/or image_model (local model folders)")
    for name, pooling in (("text_pooling", text_pooling), ("image_pooling", image_pooling)):
        if pooling not in POOLINGS:
            raise ValueError(f"{name} must be one of {POOLINGS}, got {pooling!r}")
    if on_bad_image not in ("skip", "error"):
        raise ValueError(f"on_bad_image must be 'skip' or 'error', got {on_bad_image!r}")
    np_dtype = np.dtype(dtype)
    # the CSV layout's validation hold-out is a subset of train, so every split's samples are covered
    records = read_food101_records(dataset_dir, layout)
    unique = list({r.id: r for split in records.values() for r in split}.values())
    output_dir = Path(output_dir)
    outputs = {}
    if text_model is not None:
        outputs["text"] = (output_dir / "text_features.h5", overwrite)
    if image_model is not None:
        outputs["image"] = (output_dir / "image_features.h5", overwrite)
    refuse_existing((path for path, _ in outputs.values()), overwrite)  # fail before any work
    written = {}
    if text_model is not None:
        n = _extract_text(
            unique, text_model, outputs["text"], text_pooling, max_text_length, batch_size, device, np_dtype
        )
        logger.info(f"wrote {n} text features to {outputs['text'][0]}")
        written["text"] = outputs["text"][0]
    if image_model is not None:
        n = _extract_image(
            unique, image_model, outputs["image"], image_pooling, batch_size, device, np_dtype, on_bad_image
        )
        logger.info(f"wrote {n} image features to {outputs['image'][0]}")
        written["image"] = outputs["image"][0]
    return written
