"""UPMC Food-101 in its two common layouts, read into text + image samples.

JSON layout (``dataset_dir`` holds ``train.json``, ``dev.json``, ``test.json``; each a JSON list or
JSON lines of ``{"id", "text_tokens", "img_path", "label"}``; ``img_path`` relative to ``dataset_dir``
or to ``dataset_dir/images``).

CSV layout (the original release): ``texts/train_titles.csv`` and ``texts/test_titles.csv`` with rows
``image_name,text,label`` (a header row is recognised and skipped) and images under
``images/{train,test}/<label>/<image_name>``. It has no validation split: ``val_fraction`` of the
training rows (stratified by class, seeded) is held out.

Each modality comes either from a frozen pretrained model in a local folder (the text is tokenised
and the image preprocessed here; the network runs the model) or from a precomputed feature file:
an HDF5 file with one dataset per sample id, ``(L, D)`` or ``(D,)`` (see
``brats-cggm-food101-features``).
"""

from __future__ import annotations

import csv
import json
import logging
import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from brats_cggm.adapters.data import H5Features, ListDataset, MultimodalSplits, check_on_invalid, drop_or_raise
from brats_cggm.adapters.errors import AdapterDataError
from brats_cggm.adapters.food101.model import local_model_dir

__all__ = [
    "MODALITIES",
    "Food101Record",
    "load_food101",
    "read_food101_records",
]

logger = logging.getLogger(__name__)

MODALITIES = ("text", "image")
JSON_SPLITS = {"train": ("train",), "val": ("dev", "val", "valid"), "test": ("test",)}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
BAD_IMAGE = ("skip", "error")


@dataclass(frozen=True)
class Food101Record:
    """One sample: its id, text, image file and label (a class name)."""

    id: str
    text: str
    image: Path
    label: str


def _read_json_records(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = []
        for n, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    data.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise AdapterDataError(f"{path}:{n}: not JSON ({e})") from e
    if isinstance(data, dict):
        data = data.get("data", list(data.values()))
    if not isinstance(data, list):
        raise AdapterDataError(f"{path}: expected a list of records")
    return data


def _json_split(root: Path, split: str) -> list[Food101Record]:
    for name in JSON_SPLITS[split]:
        for suffix in (".json", ".jsonl"):
            path = root / f"{name}{suffix}"
            if path.is_file():
                break
        else:
            continue
        records = []
        for n, item in enumerate(_read_json_records(path)):
            missing = [k for k in ("text_tokens", "img_path", "label") if k not in item]
            if missing:
                raise AdapterDataError(f"{path}: record {n} lacks {missing} (has {sorted(item)})")
            tokens = item["text_tokens"]
            text = " ".join(map(str, tokens)) if isinstance(tokens, list | tuple) else str(tokens)
            image = Path(item["img_path"])
            if not image.is_absolute():
                # some releases give img_path relative to images/ rather than to the data set folder
                candidates = [root / image, root / "images" / image]
                image = next((c for c in candidates if c.exists()), candidates[0])
            records.append(Food101Record(str(item.get("id", image.stem)), text, image, str(item["label"])))
        return records
    raise AdapterDataError(f"{root}: no {split!r} split (looked for {[n + '.json' for n in JSON_SPLITS[split]]})")


def _csv_split(root: Path, split: str) -> list[Food101Record]:
    path = root / "texts" / f"{split}_titles.csv"
    if not path.is_file():
        raise AdapterDataError(f"{root}: no {split!r} split ({path} not found)")
    records = []
    with path.open(newline="", encoding="utf-8") as f:
        for n, row in enumerate(csv.reader(f), start=1):
            if not row:
                continue
            if n == 1 and not row[0].lower().endswith(IMAGE_SUFFIXES):
                continue  # header
            if len(row) < 3:
                raise AdapterDataError(f"{path}:{n}: expected image_name,text,label, got {row}")
            name, text, label = row[0], ",".join(row[1:-1]), row[-1]
            image = root / "images" / split / label / name
            if not image.exists():
                for candidate in (root / "images" / split / name, root / "images" / name):
                    if candidate.exists():
                        image = candidate
                        break
            records.append(Food101Record(Path(name).stem, text, image, label))
    return records


def _hold_out(records: list[Food101Record], fraction: float, seed: int) -> tuple[list, list]:
    by_class: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        by_class[r.label].append(i)
    rng = np.random.default_rng(seed)
    held: set[int] = set()
    for label in sorted(by_class):
        idx = by_class[label]
        k = max(1, round(fraction * len(idx))) if fraction > 0 else 0
        if k and len(idx) > 1:
            held.update(rng.choice(idx, size=min(k, len(idx) - 1), replace=False).tolist())
    return [r for i, r in enumerate(records) if i not in held], [r for i, r in enumerate(records) if i in held]


def read_food101_records(
    dataset_dir: str | Path, layout: str = "auto", val_fraction: float = 0.1, seed: int = 0
) -> dict[str, list[Food101Record]]:
    """The records of each split (``train``, ``val``, ``test``), from the JSON or the CSV layout.

    Args:
        dataset_dir: the data set folder.
        layout: ``"json"``, ``"csv"`` or ``"auto"`` (CSV when ``texts/`` exists and ``train.json`` does not).
        val_fraction: CSV layout: the training fraction held out for validation (stratified by class).
        seed: the seed of that hold-out.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``.

    Raises:
        AdapterDataError: a missing folder, split file or record field; one id for two different images.
    """
    root = Path(dataset_dir)
    if not root.is_dir():
        raise AdapterDataError(f"Food-101 folder not found: {root}")
    if layout == "auto":
        layout = "csv" if (root / "texts").is_dir() and not (root / "train.json").is_file() else "json"
    if layout == "json":
        records = {split: _json_split(root, split) for split in JSON_SPLITS}
    elif layout == "csv":
        train, val = _hold_out(_csv_split(root, "train"), val_fraction, seed)
        records = {"train": train, "val": val, "test": _csv_split(root, "test")}
    else:
        raise ValueError(f"layout must be 'auto', 'json' or 'csv', got {layout!r}")
    _check_unique_ids(records, root)
    return records


def _check_unique_ids(records: dict[str, list[Food101Record]], root: Path) -> None:
    # feature files are keyed by sample id, so two different samples must never share one
    seen: dict[str, Food101Record] = {}
    for items in records.values():
        for r in items:
            other = seen.setdefault(r.id, r)
            if other is not r and other.image != r.image:
                raise AdapterDataError(f"{root}: sample id {r.id!r} is used by {other.image} and {r.image}")


def _feature_tensor(x: np.ndarray) -> torch.Tensor:
    """A precomputed feature as a ``(L, D)`` tensor (a single vector becomes one token)."""
    return torch.from_numpy(x[None] if x.ndim == 1 else x)


class _SampleLoader:
    """Record → sample dict; an unreadable image is skipped (None, with a warning) or raises."""

    def __init__(
        self,
        class_index: dict[str, int],
        tokenizer: Any = None,
        image_processor: Any = None,
        text_features: H5Features | None = None,
        image_features: H5Features | None = None,
        max_text_length: int = 64,
        on_bad_image: str = "skip",
    ) -> None:
        self.class_index = class_index
        self.tokenizer, self.image_processor = tokenizer, image_processor
        self.text_features, self.image_features = text_features, image_features
        self.max_text_length = max_text_length
        self.on_bad_image = on_bad_image
        self.skipped: set[str] = set()

    def skipped_files(self) -> list[str]:
        """The unreadable images skipped so far (by this process's loading; workers keep their own)."""
        return sorted(self.skipped)

    def _image(self, record: Food101Record) -> torch.Tensor | None:
        from PIL import Image

        try:
            with Image.open(record.image) as img:
                pixels = self.image_processor(images=img.convert("RGB"), return_tensors="pt")["pixel_values"][0]
        except Exception as e:  # PIL raises several types for broken files
            message = f"cannot read Food-101 image {record.image} (sample {record.id}): {type(e).__name__}: {e}"
            if self.on_bad_image == "error":
                raise AdapterDataError(message) from e
            if str(record.image) not in self.skipped:
                self.skipped.add(str(record.image))
                warnings.warn(message + "; skipped", stacklevel=2)
            return None
        return pixels

    def __call__(self, record: Food101Record) -> dict[str, Any] | None:
        sample: dict[str, Any] = {}
        if self.text_features is not None:
            sample["text"] = _feature_tensor(self.text_features.read(record.id))
        else:
            tokens = self.tokenizer(
                record.text,
                padding="max_length",
                truncation=True,
                max_length=self.max_text_length,
                return_tensors="pt",
            )
            sample["text"] = {k: v[0] for k, v in tokens.items()}
        if self.image_features is not None:
            sample["image"] = _feature_tensor(self.image_features.read(record.id))
        else:
            pixels = self._image(record)
            if pixels is None:
                return None
            sample["image"] = pixels
        sample["label"] = torch.tensor(self.class_index[record.label])
        return sample


def _check_feature_file(path: Path, records: dict[str, list[Food101Record]], on_invalid: str, info: dict) -> int:
    """Checks that every sample id is in ``path`` with one feature size; drops or fails otherwise."""
    import h5py

    if not path.is_file():
        raise AdapterDataError(f"Food-101 feature file not found: {path}")
    dim, first = None, None
    with h5py.File(path, "r") as f:
        for split, items in records.items():
            kept, missing = [], []
            for r in items:
                if r.id not in f:
                    missing.append(r.id)
                    continue
                d = f[r.id].shape[-1]
                if dim is None:
                    dim, first = d, r.id
                elif d != dim:
                    raise AdapterDataError(f"{path}: sample {r.id} has feature size {d}, sample {first} has {dim}")
                kept.append(r)
            if missing:
                message = f"{path}: {len(missing)} {split} samples have no features (ids {missing[:5]})"
                # the warning points at load_food101's caller (via _modality_source)
                drop_or_raise(message, on_invalid, info["dropped"], split, len(missing), stacklevel=4)
            records[split] = kept
    if dim is None:
        raise AdapterDataError(f"{path}: no features for any sample")
    return int(dim)


def _modality_source(
    modality: str,
    model_dir: str | Path | None,
    features: str | Path | None,
    records: dict[str, list[Food101Record]],
    on_invalid: str,
    info: dict,
) -> tuple[int, H5Features | None, Any]:
    """The feature size of ``modality`` and what its samples are read with.

    Returns:
        ``(size, feature file, None)`` for precomputed features (samples missing from the file are
        dropped or raise, see :func:`_check_feature_file`); ``(hidden size, None, preprocessor)`` for a
        local model folder (the tokenizer for ``text``, the image processor for ``image``).
    """
    if features is not None:
        size = _check_feature_file(Path(features), records, on_invalid, info)
        return size, H5Features(Path(features)), None
    if model_dir is None:
        raise ValueError(f"give exactly one of {modality}_model (a local model folder) or {modality}_features")
    import transformers

    model_dir = local_model_dir(model_dir, f"{modality}_model")
    preprocessor_class = transformers.AutoTokenizer if modality == "text" else transformers.AutoImageProcessor
    preprocessor = preprocessor_class.from_pretrained(model_dir, local_files_only=True)
    size = int(transformers.AutoConfig.from_pretrained(model_dir, local_files_only=True).hidden_size)
    return size, None, preprocessor


def _verify_images(records: dict[str, list[Food101Record]], on_bad_image: str, check_content: bool, info: dict):
    from PIL import Image

    for split, items in records.items():
        kept, bad = [], []
        for r in items:
            try:
                if not r.image.is_file():
                    raise FileNotFoundError("no such file")
                if check_content:
                    with Image.open(r.image) as img:
                        img.verify()
            except Exception as e:
                if on_bad_image == "error":
                    raise AdapterDataError(f"cannot read Food-101 image {r.image} (sample {r.id}): {e}") from e
                bad.append(str(r.image))
                continue
            kept.append(r)
        if bad:
            warnings.warn(f"Food-101 {split}: skipped {len(bad)} unreadable images: {bad[:5]}", stacklevel=3)
            info["skipped_images"][split] = len(bad)
        records[split] = kept


def load_food101(
    dataset_dir: str | Path,
    text_model: str | Path | None = None,
    image_model: str | Path | None = None,
    text_features: str | Path | None = None,
    image_features: str | Path | None = None,
    layout: str = "auto",
    val_fraction: float = 0.1,
    seed: int = 0,
    max_text_length: int = 64,
    on_bad_image: str = "skip",
    verify_images: bool = False,
    on_invalid: str = "error",
    class_names: Sequence[str] | None = None,
) -> MultimodalSplits:
    """Load UPMC Food-101 for the text + image network.

    Args:
        dataset_dir: the data set folder (JSON or CSV layout, see the module docstring).
        text_model: a local folder with a ``transformers`` text model and its tokenizer (e.g. BERT).
        image_model: a local folder with a ``transformers`` image model and its image processor (e.g. ViT).
        text_features: an HDF5 file of precomputed text features (instead of ``text_model``).
        image_features: an HDF5 file of precomputed image features (instead of ``image_model``).
        layout: ``"json"``, ``"csv"`` or ``"auto"``.
        val_fraction: the training fraction held out for validation (CSV layout only).
        seed: seed of that hold-out.
        max_text_length: tokens per text (padded/truncated).
        on_bad_image: an image that is missing or cannot be decoded: ``"skip"`` (dropped from its batch,
            with a warning naming the file) or ``"error"`` (an error naming the file).
        verify_images: decode-check every image up front (missing files are always checked up front).
        on_invalid: a val/test label not among the training classes, or a sample missing from a feature
            file: ``"error"`` or ``"drop"``.
        class_names: the class list (default: the sorted training labels).

    Returns:
        The splits; ``input_dims`` holds the feature sizes (the backbones' hidden sizes where used).
    """
    check_on_invalid(on_invalid)
    if on_bad_image not in BAD_IMAGE:
        raise ValueError(f"on_bad_image must be one of {BAD_IMAGE}, got {on_bad_image!r}")
    sources = {"text": (text_model, text_features), "image": (image_model, image_features)}
    for m, (model, features) in sources.items():
        if (model is None) == (features is None):
            raise ValueError(f"give exactly one of {m}_model (a local model folder) or {m}_features (an HDF5 file)")
    records = read_food101_records(dataset_dir, layout, val_fraction, seed)
    info: dict = {"dataset_dir": str(dataset_dir), "dropped": {}, "skipped_images": {}}
    classes = tuple(class_names) if class_names is not None else tuple(sorted({r.label for r in records["train"]}))
    class_index = {c: i for i, c in enumerate(classes)}
    for split, items in records.items():
        unknown = [r for r in items if r.label not in class_index]
        if unknown:
            message = f"Food-101 {split}: {len(unknown)} labels are not training classes (e.g. {unknown[0].label!r})"
            drop_or_raise(message, on_invalid, info["dropped"], split, len(unknown))
            records[split] = [r for r in items if r.label in class_index]

    dims, feature_files, preprocessors = {}, {}, {}
    for m, (model, features) in sources.items():
        dims[m], feature_files[m], preprocessors[m] = _modality_source(m, model, features, records, on_invalid, info)
    if image_features is None:
        _verify_images(records, on_bad_image, verify_images, info)
    loader = _SampleLoader(
        class_index,
        preprocessors["text"],
        preprocessors["image"],
        feature_files["text"],
        feature_files["image"],
        max_text_length,
        on_bad_image,
    )
    datasets = {split: ListDataset(items, loader=loader) for split, items in records.items()}
    for split, d in datasets.items():
        if len(d) == 0:
            raise AdapterDataError(f"Food-101 {split} split of {dataset_dir} is empty")
    info["images_skipped_while_loading"] = loader.skipped_files
    return MultimodalSplits(
        datasets["train"], datasets["val"], datasets["test"], MODALITIES, dims, len(classes), classes, info=info
    )
