"""Stage 1 pre-training, the case embeddings and the encoder file (docs/methods.md §8.1, §8.2, §8.5)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from brats_cggm.brats.encoder_weights import load_encoder_weights, save_encoder_weights
from brats_cggm.brats.model import build_network
from brats_cggm.selection.embeddings import brain_patches, case_embeddings
from brats_cggm.selection.pretraining import PretrainingConfig, pretrain_encoders, sample_views

TINY = {"features": (4, 8), "patch_size": 8, "jitter": 1, "steps": 3, "batch_size": 3, "embedding_dim": 8}


def _volumes(n: int = 4, seed: int = 0) -> list[torch.Tensor]:
    """Cases of 2 modalities, 12^3, a 'head' cube of non-zero voxels inside a zero background."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        v = torch.zeros(2, 12, 12, 12)
        v[:, 2:10, 2:10, 2:10] = torch.randn(2, 8, 8, 8, generator=g)
        out.append(v)
    return out


def test_views_are_patches_of_the_case_shifted_and_scaled_per_modality():
    volume = torch.zeros(2, 12, 12, 12)
    volume[0, 6, 6, 6] = 1.0  # the only brain voxel: the centre is known
    volume[1, 6, 6, 6] = 2.0
    views = sample_views(volume, 4, jitter=0, rng=np.random.default_rng(0), intensity_scale=0.0, intensity_shift=0.0)
    assert views.shape == (2, 4, 4, 4)
    # patch [c - 2, c + 2): the centre voxel at index 2 of each axis
    assert views[0, 2, 2, 2] == 1.0 and views[1, 2, 2, 2] == 2.0 and views.abs().sum() == 3.0
    shifted = sample_views(volume, 4, jitter=0, rng=np.random.default_rng(0), intensity_scale=0.0, intensity_shift=0.5)
    offsets = (shifted - views).flatten(1)
    assert torch.allclose(offsets, offsets[:, :1].expand_as(offsets))  # one shift per modality
    assert offsets[0, 0] != offsets[1, 0]


def test_brain_patches_keep_the_tiles_inside_the_head():
    volume = torch.zeros(1, 8, 8, 4)
    volume[0, :4, :4, :] = 1.0
    patches = brain_patches(volume, 4, 0.5)
    assert patches.shape == (1, 1, 4, 4, 4) and bool((patches == 1).all())
    empty = brain_patches(torch.zeros(1, 8, 8, 8), 4, 0.5)
    assert empty.shape[0] == 8  # no brain anywhere: every tile ties for "most brain"


def test_pretraining_is_deterministic_and_lowers_the_loss_on_a_repeated_batch():
    volumes = _volumes()
    config = PretrainingConfig(**{**TINY, "steps": 2})
    a = pretrain_encoders(volumes, ("m0", "m1"), config, seed=5)
    b = pretrain_encoders(volumes, ("m0", "m1"), config, seed=5)
    assert a.history == b.history
    for pa, pb in zip(a.network.encoders.parameters(), b.network.encoders.parameters()):
        assert torch.equal(pa, pb)
    emb = case_embeddings(volumes, a.network, a.heads, 8)
    assert emb.shape == (4, 2, 8)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(4, 2), atol=1e-5)
    trained = pretrain_encoders(volumes, ("m0", "m1"), PretrainingConfig(**{**TINY, "steps": 25}), seed=5)
    losses = [h["loss"] for h in trained.history]
    assert np.mean(losses[-5:]) < np.mean(losses[:5])


def test_without_prototypes_the_prototype_term_is_zero():
    result = pretrain_encoders(_volumes(), ("m0", "m1"), PretrainingConfig(**{**TINY, "prototype_weight": 0.0}))
    assert all(h["prototype"] == 0.0 for h in result.history)
    assert result.prototypes.shape[0] == 0


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="batch_size"):
        pretrain_encoders(_volumes(), ("m0", "m1"), PretrainingConfig(**{**TINY, "batch_size": 1}))
    with pytest.raises(ValueError, match="patch_size"):
        pretrain_encoders(_volumes(), ("m0", "m1"), PretrainingConfig(**{**TINY, "patch_size": 7}))
    with pytest.raises(ValueError, match="3 channels"):
        pretrain_encoders(_volumes(), ("a", "b", "c"), PretrainingConfig(**TINY))


def test_encoder_file_round_trip_and_misfits(tmp_path: Path):
    source = build_network("cpu", ("m0", "m1"), features=(4, 8))
    path = save_encoder_weights(tmp_path / "enc.pt", source)
    with pytest.raises(FileExistsError):
        save_encoder_weights(path, source)
    target = build_network("cpu", ("m0", "m1"), features=(4, 8))
    load_encoder_weights(target, path)
    for a, b in zip(source.encoders.parameters(), target.encoders.parameters()):
        assert torch.equal(a, b)
    assert load_encoder_weights(target, None) is target
    with pytest.raises(ValueError, match=r"has shape .*\(features \[4, 8\] vs \[4, 16\]\)"):
        load_encoder_weights(build_network("cpu", ("m0", "m1"), features=(4, 16)), path)
    with pytest.raises(ValueError, match=r"\['m0', 'm1'\], the network has \['m1', 'm0'\]"):
        load_encoder_weights(build_network("cpu", ("m1", "m0"), features=(4, 8)), path)
    with pytest.raises(FileNotFoundError, match=r"missing\.pt"):
        load_encoder_weights(target, tmp_path / "missing.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="no 'encoders' entry"):
        load_encoder_weights(target, tmp_path / "other.pt")
