"""IEMOCAP: the MMIN feature tree and the MulT pickle, and their errors."""

from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest
import torch

from brats_cggm.adapters.batching import pad_collate
from brats_cggm.adapters.errors import AdapterDataError
from brats_cggm.adapters.iemocap import load_iemocap

h5py = pytest.importorskip("h5py")


def test_mmin_tree_loads_normalised_variable_length_features(iemocap_mmin):
    splits = load_iemocap(iemocap_mmin, fold=1)
    assert splits.info["format"] == "mmin" and splits.num_outputs == 4
    assert (len(splits.train), len(splits.val), len(splits.test)) == (24, 8, 8)
    assert splits.input_dims == {"text": 16, "audio": 13, "vision": 12}
    frames = torch.cat([splits.train[i]["audio"] for i in range(len(splits.train))])
    assert frames.mean(0).abs().max() < 1e-4  # normalised with the training mean/std of the fold
    assert [splits.train[i]["label"].item() for i in range(4)] == [0, 1, 2, 3]
    batch = pad_collate([splits.train[i] for i in range(5)])
    lengths = [splits.train[i]["vision"].shape[0] for i in range(5)]
    assert batch["vision"].shape == (5, max(lengths), 12)
    assert batch["vision_mask"].sum(1).tolist() == lengths


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_mmin_errors_name_the_file(iemocap_mmin, tmp_path):
    root = _copy(iemocap_mmin, tmp_path / "dims")
    names = np.load(root / "target" / "1" / "val_int2name.npy")
    bad_name = names[2][0].decode()
    with h5py.File(root / "V" / "denseface.h5", "a") as f:
        del f[bad_name]
        f[bad_name] = np.zeros((4, 9), np.float32)
    with pytest.raises(AdapterDataError, match=rf"denseface.h5: utterance {bad_name} has feature size 9"):
        load_iemocap(root)

    root = _copy(iemocap_mmin, tmp_path / "missing")
    with h5py.File(root / "L" / "bert_large.h5", "a") as f:
        del f[bad_name]
    with pytest.raises(AdapterDataError, match=rf"missing from feature files.*{bad_name}.*bert_large.h5"):
        load_iemocap(root)
    with pytest.warns(UserWarning, match="dropped"):
        assert len(load_iemocap(root, on_invalid="drop").val) == 7

    with pytest.raises(AdapterDataError, match="no group for fold '2'"):
        load_iemocap(iemocap_mmin, fold=2)
    assert len(load_iemocap(iemocap_mmin, fold=1, audio_norm="utt").train) == 24

    root = _copy(iemocap_mmin, tmp_path / "nosplit")
    (root / "target" / "1" / "tst_label.npy").unlink()
    with pytest.raises(AdapterDataError, match=r"tst_label\.npy not found"):
        load_iemocap(root)


def test_mult_pickle_four_classes_and_invalid_labels(iemocap_pickle, tmp_path):
    splits = load_iemocap(iemocap_pickle)
    assert splits.info["format"] == "mult" and splits.class_names == ("neutral", "happy", "sad", "angry")
    assert [splits.train[i]["label"].item() for i in range(5)] == [0, 1, 2, 3, 0]
    assert splits.input_dims == {"text": 300, "audio": 74, "vision": 35}
    with open(iemocap_pickle, "rb") as f:
        data = pickle.load(f)
    data["valid"]["labels"][1, :, 1] = 1  # every emotion marked
    bad = tmp_path / "bad.pkl"
    with open(bad, "wb") as f:
        pickle.dump(data, f)
    with pytest.raises(AdapterDataError, match=r"bad.pkl: val/labels: 1 labels are not one of the 4 classes"):
        load_iemocap(bad)
