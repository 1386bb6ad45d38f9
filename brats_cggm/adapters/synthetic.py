"""Tiny data sets in the real file formats (MOSI/IEMOCAP MulT pickles, the MMIN IEMOCAP tree, both
Food-101 layouts) and tiny random BERT/ViT folders: for tests and for trying the bundle by hand.

Labels are learnable from the features (a planted signal), so one short run can move the metrics.
``python -m brats_cggm.adapters.synthetic OUT_DIR`` writes all of them (see docs/adapters.md).
"""

from __future__ import annotations

import argparse
import csv
import json
import pickle
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "main",
    "write_food101_csv",
    "write_food101_json",
    "write_iemocap_mmin",
    "write_iemocap_mult",
    "write_mosi_pickle",
    "write_tiny_bert",
    "write_tiny_vit",
]

SPLIT_SIZES = {"train": 24, "valid": 8, "test": 8}


def _mult_arrays(rng, n: int, seq_len: int, dims: dict[str, int], signal: np.ndarray) -> dict[str, np.ndarray]:
    out = {}
    for m, d in dims.items():
        x = rng.normal(size=(n, seq_len, d)).astype(np.float32)
        x[:, :, 0] += signal[:, None]
        out[m] = x
    return out


def write_mosi_pickle(
    path: str | Path,
    sizes: dict[str, int] | None = None,
    seq_len: int = 6,
    dims: Sequence[int] = (300, 5, 20),
    seed: int = 0,
) -> Path:
    """A MulT-layout MOSI pickle: ``train/valid/test`` → ``text``, ``audio`` (with some ``-inf``),
    ``vision``, ``labels (N, 1, 1)`` in [−3, 3] (some exactly 0)."""
    rng = np.random.default_rng(seed)
    data = {}
    for split, n in (sizes or SPLIT_SIZES).items():
        labels = np.round(rng.uniform(-3, 3, size=n) * 2) / 2
        labels[0] = 0.0
        arrays = _mult_arrays(rng, n, seq_len, dict(zip(("text", "audio", "vision"), dims)), labels)
        arrays["audio"][0, 0, :] = -np.inf
        data[split] = {**arrays, "labels": labels.reshape(n, 1, 1).astype(np.float32), "id": np.arange(n)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        pickle.dump(data, f)
    return path


def write_iemocap_mult(
    path: str | Path, sizes: dict[str, int] | None = None, seq_len: int = 5, dims=(300, 74, 35), seed: int = 0
) -> Path:
    """A MulT-layout ``iemocap_data.pkl``: labels ``(N, 4, 2)``, one emotion present per sample."""
    rng = np.random.default_rng(seed)
    data = {}
    for split, n in (sizes or SPLIT_SIZES).items():
        classes = np.arange(n) % 4
        labels = np.zeros((n, 4, 2), np.float32)
        labels[:, :, 0] = 1
        labels[np.arange(n), classes, 0] = 0
        labels[np.arange(n), classes, 1] = 1
        arrays = _mult_arrays(rng, n, seq_len, dict(zip(("text", "audio", "vision"), dims)), classes - 1.5)
        data[split] = {**arrays, "labels": labels}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        pickle.dump(data, f)
    return path


def write_iemocap_mmin(
    root: str | Path,
    fold: int = 1,
    sizes: dict[str, int] | None = None,
    dims: dict[str, int] | None = None,
    seed: int = 0,
) -> Path:
    """An MMIN IEMOCAP feature tree with variable-length utterances and one-hot labels."""
    import h5py

    rng = np.random.default_rng(seed)
    root = Path(root)
    dims = dims or {"A": 13, "V": 12, "L": 16}
    stems = {"A": "comparE", "V": "denseface", "L": "bert_large"}
    sizes = sizes or {"trn": 24, "val": 8, "tst": 8}
    target = root / "target" / str(fold)
    target.mkdir(parents=True, exist_ok=True)
    for folder in stems:
        (root / folder).mkdir(exist_ok=True)
    files = {k: h5py.File(root / k / f"{stems[k]}.h5", "w") for k in stems}
    train_audio = []
    try:
        for split, n in sizes.items():
            names = [f"Ses0{1 + i % 5}F_{split}_{i:03d}" for i in range(n)]
            classes = np.arange(n) % 4
            for name, c in zip(names, classes):
                for k, f in files.items():
                    x = rng.normal(size=(int(rng.integers(3, 9)), dims[k])).astype(np.float32)
                    x[:, 0] += c - 1.5
                    f[name] = x
                    if k == "A" and split == "trn":
                        train_audio.append(x)
            np.save(target / f"{split}_int2name.npy", np.array([[n.encode()] for n in names]))
            np.save(target / f"{split}_label.npy", np.eye(4, dtype=np.float32)[classes])
    finally:
        for f in files.values():
            f.close()
    frames = np.concatenate(train_audio)
    with h5py.File(root / "A" / "comparE_mean_std.h5", "w") as f:
        group = f.create_group(str(fold))
        group["mean"] = frames.mean(0)
        group["std"] = frames.std(0)
    return root


def _write_image(path: Path, label_index: int, rng) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = rng.integers(0, 60, size=(20, 20, 3)).astype(np.uint8)
    pixels[..., label_index % 3] += np.uint8(150)
    Image.fromarray(pixels).save(path)


FOOD_CLASSES = ("apple_pie", "caesar_salad", "sushi")
FOOD_WORDS = {"apple_pie": "sweet baked apple", "caesar_salad": "green fresh lettuce", "sushi": "raw fish rice"}


def write_food101_json(root: str | Path, sizes: dict[str, int] | None = None, seed: int = 0) -> Path:
    """The JSON layout: ``{train,dev,test}.json`` (lists of id, text_tokens, img_path, label) + ``images/``."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (sizes or {"train": 12, "dev": 6, "test": 6}).items():
        records = []
        for i in range(n):
            label = FOOD_CLASSES[i % len(FOOD_CLASSES)]
            rel = f"images/{split}/{label}_{i}.jpg"
            _write_image(root / rel, i % len(FOOD_CLASSES), rng)
            tokens = [*FOOD_WORDS[label].split(), "recipe", str(i)]
            records.append({"id": f"{split}_{i}", "text_tokens": tokens, "img_path": rel, "label": label})
        (root / f"{split}.json").write_text(json.dumps(records))
    return root


def write_food101_csv(root: str | Path, sizes: dict[str, int] | None = None, seed: int = 0) -> Path:
    """The original layout: ``texts/{train,test}_titles.csv`` and ``images/{train,test}/<label>/<name>``."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    (root / "texts").mkdir(parents=True, exist_ok=True)
    for split, n in (sizes or {"train": 15, "test": 6}).items():
        with (root / "texts" / f"{split}_titles.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            for i in range(n):
                label = FOOD_CLASSES[i % len(FOOD_CLASSES)]
                name = f"{label}_{split}_{i}.jpg"
                _write_image(root / "images" / split / label / name, i % len(FOOD_CLASSES), rng)
                writer.writerow([name, f"{FOOD_WORDS[label]} recipe, number {i}", label])
    return root


def write_tiny_bert(path: str | Path, hidden_size: int = 16, seed: int = 0) -> Path:
    """A random 1-layer BERT with a word-level tokenizer over the synthetic vocabulary, saved to ``path``."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    words = sorted({w for text in FOOD_WORDS.values() for w in text.split()} | {"recipe", "number", ","})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, *map(str, range(40))]
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizer(str(path / "vocab.txt")).save_pretrained(str(path))
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=hidden_size,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=2 * hidden_size,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(str(path))
    return path


def write_tiny_vit(path: str | Path, hidden_size: int = 16, image_size: int = 16, seed: int = 0) -> Path:
    """A random 1-layer ViT (patch 8) with its image processor (resize to ``image_size``), saved to ``path``."""
    import torch
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = ViTConfig(
        hidden_size=hidden_size,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=2 * hidden_size,
        image_size=image_size,
        patch_size=8,
    )
    ViTModel(config).save_pretrained(str(path))
    ViTImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(str(path))
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Write every synthetic data set and the tiny models into a new folder.

    Layout: ``mosi_data.pkl``, ``iemocap_data.pkl``, ``iemocap/`` (MMIN tree, fold 1), ``food101_json/``,
    ``food101_csv/``, ``models/bert``, ``models/vit``.
    """
    parser = argparse.ArgumentParser(description="Write tiny MOSI, IEMOCAP and Food-101 data sets and models.")
    parser.add_argument("output_dir", help="a new or empty folder")
    args = parser.parse_args(argv)
    root = Path(args.output_dir)
    if root.exists() and any(root.iterdir()):
        print(f"error: {root} is not empty; give a new folder", file=sys.stderr)
        return 1
    write_mosi_pickle(root / "mosi_data.pkl")
    write_iemocap_mult(root / "iemocap_data.pkl")
    write_iemocap_mmin(root / "iemocap")
    write_food101_json(root / "food101_json")
    write_food101_csv(root / "food101_csv")
    write_tiny_bert(root / "models" / "bert")
    write_tiny_vit(root / "models" / "vit")
    print(f"wrote synthetic MOSI, IEMOCAP and Food-101 data and tiny BERT/ViT models to {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
