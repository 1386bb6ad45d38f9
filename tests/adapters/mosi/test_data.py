"""MOSI MulT pickle reading and its errors."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from brats_cggm.adapters.batching import MultimodalPrepareBatch, pad_collate
from brats_cggm.adapters.errors import AdapterDataError
from brats_cggm.adapters.model import MultimodalTransformer
from brats_cggm.adapters.mosi import load_mosi


def _rewrite(src, dst, edit):
    with open(src, "rb") as f:
        data = pickle.load(f)
    edit(data)
    with open(dst, "wb") as f:
        pickle.dump(data, f)
    return dst


def test_load_mosi_reads_splits_dims_and_fixes_inf(mosi_pickle):
    splits = load_mosi(mosi_pickle)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (24, 8, 8)
    assert splits.input_dims == {"text": 300, "audio": 5, "vision": 20}
    sample = splits.train[0]
    assert torch.isfinite(sample["audio"]).all() and (sample["audio"][0] == 0).all()
    assert sample["label"].ndim == 0 and -3 <= sample["label"].item() <= 3
    inputs, targets = MultimodalPrepareBatch()(pad_collate([splits.train[i] for i in range(4)]), "cpu")
    assert targets.shape == (4,) and inputs["text"].shape == (4, 6, 300) and inputs["text_mask"].all()
    net = MultimodalTransformer(splits.modalities, splits.input_dims, 1, d_model=8, hidden_dim=8, num_heads=2)
    out = net.forward_features(inputs)
    assert out.logits.shape == (4, 1) and len(out.features) == 3 and out.head_input.shape == (4, 8)
    assert net.output_layer.weight.shape == (1, 8)


def test_missing_split_and_key_are_named(mosi_pickle, tmp_path):
    bad = _rewrite(mosi_pickle, tmp_path / "nosplit.pkl", lambda d: d.pop("valid"))
    with pytest.raises(AdapterDataError, match=r"nosplit\.pkl.*'val'"):
        load_mosi(bad)
    bad = _rewrite(mosi_pickle, tmp_path / "nokey.pkl", lambda d: d["test"].pop("vision"))
    with pytest.raises(AdapterDataError, match=r"nokey\.pkl.*'test' has no 'vision'"):
        load_mosi(bad)
    with pytest.raises(AdapterDataError, match="not found"):
        load_mosi(tmp_path / "missing.pkl")


def test_dimension_mismatch_across_splits(mosi_pickle, tmp_path):
    def edit(d):
        d["test"]["audio"] = np.zeros((8, 6, 7), np.float32)

    with pytest.raises(AdapterDataError, match="test/audio has feature size 7"):
        load_mosi(_rewrite(mosi_pickle, tmp_path / "dims.pkl", edit))


def test_labels_out_of_range_error_or_drop(mosi_pickle, tmp_path):
    def edit(d):
        d["train"]["labels"][3, 0, 0] = 4.5

    bad = _rewrite(mosi_pickle, tmp_path / "labels.pkl", edit)
    with pytest.raises(AdapterDataError, match=r"labels.pkl: train/labels has 1 values outside \[-3.0, 3.0\]"):
        load_mosi(bad)
    with pytest.warns(UserWarning, match="dropped"):
        splits = load_mosi(bad, on_invalid="drop")
    assert len(splits.train) == 23 and splits.info["dropped"] == {"train": 1}
