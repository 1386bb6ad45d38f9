"""Precomputed Food-101 features: what the frozen models output, stored per sample id, and read back."""

from __future__ import annotations

import shutil

import pytest
import torch

from brats_cggm.adapters.errors import AdapterDataError
from brats_cggm.adapters.food101 import extract_food101_features, load_food101
from brats_cggm.cli.food101_features import main

h5py = pytest.importorskip("h5py")


def test_features_match_the_frozen_models_and_train_inputs(food101_json, tiny_bert, tiny_vit, tmp_path):
    out = extract_food101_features(
        food101_json, tmp_path / "feat", tiny_bert, tiny_vit, image_pooling="sequence", dtype="float32"
    )
    assert set(out) == {"text", "image"}
    direct = load_food101(food101_json, text_model=tiny_bert, image_model=tiny_vit, max_text_length=64)
    stored = load_food101(food101_json, text_features=out["text"], image_features=out["image"])
    assert stored.input_dims == {"text": 16, "image": 16} == direct.input_dims

    from transformers import AutoModel

    bert = AutoModel.from_pretrained(str(tiny_bert), local_files_only=True).eval()
    vit = AutoModel.from_pretrained(str(tiny_vit), local_files_only=True).eval()
    sample, features = direct.val[2], stored.val[2]
    with torch.no_grad():
        tokens = {k: v[None] for k, v in sample["text"].items()}
        text = bert(**tokens).last_hidden_state[0][tokens["attention_mask"][0].bool()]
        image = vit(pixel_values=sample["image"][None]).last_hidden_state[0]
    # only the valid tokens are stored, all (1 + 4) patch tokens of the 16x16 image with patch 8
    assert features["text"].shape == text.shape and features["image"].shape == (5, 16)
    torch.testing.assert_close(features["text"], text, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(features["image"], image, atol=1e-4, rtol=1e-4)
    assert features["label"] == sample["label"]


def test_existing_files_are_kept_and_bad_images_are_named(food101_json, tiny_bert, tiny_vit, tmp_path, capsys):
    root = shutil.copytree(food101_json, tmp_path / "food")
    broken = root / "images" / "dev" / "sushi_2.jpg"
    broken.write_bytes(b"broken")
    feat = tmp_path / "feat"
    with pytest.warns(UserWarning, match=r"sushi_2\.jpg"):
        out = extract_food101_features(root, feat, image_model=tiny_vit)
    assert set(out) == {"image"} and not (feat / "text_features.h5").exists()
    with h5py.File(out["image"], "r") as f:
        assert "dev_2" not in f and f["dev_1"].shape == (16,) and f["dev_1"].dtype == "float16"

    before = out["image"].read_bytes()
    assert main([str(root), "--output-dir", str(feat), "--image-model", str(tiny_vit)]) == 1
    assert "exists" in capsys.readouterr().err and out["image"].read_bytes() == before
    assert not list(feat.glob(".*.tmp"))

    with pytest.raises(AdapterDataError, match=r"image_features\.h5: 1 val samples have no features"):
        load_food101(root, text_model=tiny_bert, image_features=out["image"])
    with pytest.warns(UserWarning, match="dropped"):
        splits = load_food101(root, text_model=tiny_bert, image_features=out["image"], on_invalid="drop")
    assert len(splits.val) == 5
    with pytest.raises(AdapterDataError, match=r"sushi_2\.jpg"):
        extract_food101_features(root, tmp_path / "strict", image_model=tiny_vit, on_bad_image="error")
    assert not (tmp_path / "strict" / "image_features.h5").exists()
