"""Food-101: both layouts, frozen backbones or feature files, unreadable images."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from brats_cggm.adapters.batching import MultimodalPrepareBatch, pad_collate
from brats_cggm.adapters.errors import AdapterDataError
from brats_cggm.adapters.food101 import build_food101_network, load_food101, read_food101_records


def test_json_layout_with_backbones(food101_json, tiny_bert, tiny_vit):
    splits = load_food101(food101_json, text_model=tiny_bert, image_model=tiny_vit, max_text_length=12)
    assert splits.class_names == ("apple_pie", "caesar_salad", "sushi")
    assert (len(splits.train), len(splits.val), len(splits.test)) == (12, 6, 6)
    sample = splits.train[1]
    assert sample["text"]["input_ids"].shape == (12,) and sample["image"].shape == (3, 16, 16)
    assert sample["label"].item() == 1
    inputs, _ = MultimodalPrepareBatch()(pad_collate([splits.train[i] for i in range(3)]), "cpu")
    net = build_food101_network(splits.input_dims, 3, tiny_bert, tiny_vit, d_model=8, hidden_dim=8, num_heads=2)
    out = net.forward_features(inputs)
    assert out.logits.shape == (3, 3) and out.features[0].shape == (3, 12, 8)
    out.logits.sum().backward()
    frozen = [p for p in net.encoders[0].backbone.parameters()]
    assert frozen and all(p.grad is None and not p.requires_grad for p in frozen)
    assert net.encoders[0].proj.weight.grad is not None


def test_csv_layout_holds_out_validation(food101_csv):
    records = read_food101_records(food101_csv, val_fraction=0.2, seed=0)
    assert len(records["val"]) == 3 and len(records["train"]) == 12 and len(records["test"]) == 6
    assert {r.label for r in records["val"]} == {"apple_pie", "caesar_salad", "sushi"}
    assert all(r.image.is_file() for split in records.values() for r in split)
    assert records["train"][0].text.startswith("sweet baked apple recipe, number")


def test_bad_image_skip_or_error_names_the_file(food101_json, tiny_bert, tiny_vit, tmp_path):
    root = shutil.copytree(food101_json, tmp_path / "food")
    broken = root / "images" / "train" / "caesar_salad_1.jpg"
    broken.write_bytes(b"not a jpeg")
    splits = load_food101(root, text_model=tiny_bert, image_model=tiny_vit, on_bad_image="skip")
    with pytest.warns(UserWarning, match=r"caesar_salad_1\.jpg"):
        assert splits.train[1] is None
    assert len(pad_collate([splits.train[i] for i in range(3)])["label"]) == 2
    strict = load_food101(root, text_model=tiny_bert, image_model=tiny_vit, on_bad_image="error")
    with pytest.raises(AdapterDataError, match=r"caesar_salad_1\.jpg"):
        strict.train[1]
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        checked = load_food101(root, text_model=tiny_bert, image_model=tiny_vit, verify_images=True)
    assert len(checked.train) == 11
    broken.unlink()
    with pytest.raises(AdapterDataError, match=r"caesar_salad_1\.jpg"):
        load_food101(root, text_model=tiny_bert, image_model=tiny_vit, on_bad_image="error")


def test_feature_files_and_errors(food101_json, tmp_path):
    h5py = pytest.importorskip("h5py")
    records = read_food101_records(food101_json)
    ids = [r.id for split in records.values() for r in split]
    with h5py.File(tmp_path / "text.h5", "w") as f:
        for i in ids:
            f[i] = np.ones((4, 6), np.float32)
    with h5py.File(tmp_path / "image.h5", "w") as f:
        for i in ids:
            f[i] = np.ones(10, np.float32)  # pooled vectors
    splits = load_food101(food101_json, text_features=tmp_path / "text.h5", image_features=tmp_path / "image.h5")
    assert splits.input_dims == {"text": 6, "image": 10}
    assert splits.train[0]["image"].shape == (1, 10) and splits.train[0]["text"].shape == (4, 6)
    with h5py.File(tmp_path / "image2.h5", "w") as f:  # the loaded splits keep image.h5 open
        for n, i in enumerate(ids):
            f[i] = np.ones(11 if n == 5 else 10, np.float32)
    with pytest.raises(AdapterDataError, match=rf"image2.h5: sample {ids[5]} has feature size 11"):
        load_food101(food101_json, text_features=tmp_path / "text.h5", image_features=tmp_path / "image2.h5")
    with pytest.raises(ValueError, match="exactly one of text_model"):
        load_food101(food101_json, image_features=tmp_path / "image.h5")


def test_missing_split_and_unknown_label(food101_json, tmp_path, tiny_bert, tiny_vit):
    root = shutil.copytree(food101_json, tmp_path / "food")
    (root / "dev.json").unlink()
    with pytest.raises(AdapterDataError, match="no 'val' split"):
        read_food101_records(root)
    root = shutil.copytree(food101_json, tmp_path / "food2")
    records = json.loads((root / "test.json").read_text())
    records[0]["label"] = "pizza"
    (root / "test.json").write_text(json.dumps(records))
    with pytest.raises(AdapterDataError, match="'pizza'"):
        load_food101(root, text_model=tiny_bert, image_model=tiny_vit)
    with pytest.warns(UserWarning, match="not training classes"):
        dropped = load_food101(root, text_model=tiny_bert, image_model=tiny_vit, on_invalid="drop")
    assert len(dropped.test) == 5 and dropped.info["dropped"] == {"test": 1}
    assert torch.is_tensor(dropped.test[0]["label"])


def test_model_folders_must_exist_locally(food101_json, tiny_vit, tmp_path):
    with pytest.raises(AdapterDataError, match=r"text_model .*nobert does not exist"):
        load_food101(food101_json, text_model=tmp_path / "nobert", image_model=tiny_vit)
    (tmp_path / "empty").mkdir()
    with pytest.raises(AdapterDataError, match=r"image_model .*empty has no config\.json"):
        build_food101_network({"text": 4}, 3, image_model=tmp_path / "empty")


def test_json_img_path_may_be_relative_to_images(food101_json, tmp_path):
    root = shutil.copytree(food101_json, tmp_path / "food")
    for split in ("train", "dev", "test"):
        records = json.loads((root / f"{split}.json").read_text())
        for r in records:
            r["img_path"] = r["img_path"].removeprefix("images/")
        (root / f"{split}.json").write_text(json.dumps(records))
    records = read_food101_records(root)
    assert records["val"][0].image == root / "images" / "dev" / "apple_pie_0.jpg"
    assert all(r.image.is_file() for split in records.values() for r in split)
