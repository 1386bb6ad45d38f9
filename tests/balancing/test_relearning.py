"""Diagnosing & Re-learning (docs/methods.md §4): k-means purity, α, the soft re-initialisation, its schedule."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from brats_cggm.balancing.relearning import (
    RelearningBalancer,
    cluster_purity,
    find_validation_loader,
    kmeans,
    minmax_scale,
    reinit_alpha,
    soft_reinit_,
    voxel_samples,
)
from brats_cggm.brats.model import build_network

MODALITIES = ("flair", "t1ce", "t1", "t2")


def test_purity_hand_computed():
    assert cluster_purity(torch.tensor([0, 0, 0, 1, 1, 1]), torch.tensor([0, 0, 1, 1, 1, 1])) == pytest.approx(5 / 6)
    assert cluster_purity(torch.tensor([0, 1, 2, 0]), torch.tensor([7, 7, 3, 3])) == pytest.approx(3 / 4)


def test_kmeans_separates_clear_clusters():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    labels = torch.arange(3).repeat_interleave(50)
    x = centres[labels] + 0.3 * torch.randn(150, 2, generator=g)
    assign, found = kmeans(x, 3, generator=g)
    assert cluster_purity(assign, labels) == 1.0
    assert found.shape == (3, 2)


def test_alpha_and_blend():
    assert reinit_alpha(torch.tensor([0.1]), 3.0).item() == pytest.approx(math.tanh(0.3))
    p = torch.nn.Parameter(torch.tensor([2.0, -4.0]))
    soft_reinit_([p], [torch.tensor([0.0, 4.0])], alpha=0.25)
    torch.testing.assert_close(p.data, torch.tensor([1.5, -2.0]))  # 0.25·init + 0.75·θ


def test_voxel_classes_from_nested_regions_stratified():
    targets = torch.zeros(1, 3, 4, 4, 4)
    targets[:, 1, :2] = 1  # WT
    targets[:, 0, :1] = 1  # TC ⊂ WT
    targets[:, 2, 0, 0] = 1  # ET ⊂ TC
    features = torch.arange(64.0).view(1, 1, 4, 4, 4)
    x, y = voxel_samples(features, targets, per_class=10, generator=torch.Generator().manual_seed(0))
    counts = {int(c): int((y == c).sum()) for c in y.unique()}
    assert counts == {0: 10, 2: 10, 3: 10, 7: 4}  # background, edema, necrosis, enhancing
    assert x.shape == (34, 1)


def _engine(network, batches):
    return SimpleNamespace(
        network=network,
        data_loader=batches,
        prepare_batch=lambda b, device, non_blocking: (b["image"], b["label"]),
        state=SimpleNamespace(device=torch.device("cpu")),
        non_blocking=False,
    )


def _batches(n, side, seed):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        label = torch.zeros(1, 3, side, side, side)
        label[:, 1, : side // 2] = 1
        label[:, 0, : side // 4] = 1
        out.append({"image": torch.randn(1, 4, side, side, side, generator=g) + label[:, 1:2], "label": label})
    return out


def test_epoch_end_schedule_and_blend_towards_init():
    torch.manual_seed(0)
    network = build_network("cpu", modalities=MODALITIES, features=(4, 8, 16))
    balancer = RelearningBalancer(
        MODALITIES, heldout_loader=_batches(1, 24, 1), reinit_epoch=2, reinit_num=1
    )  # held-out volumes 24³ are cropped to the training batches' 16³
    balancer.attach(_engine(network, _batches(1, 16, 0)))
    with torch.no_grad():
        for p in network.parameters():
            p.add_(1.0)
    trained = {n: p.detach().clone() for n, p in network.named_parameters()}
    balancer.epoch_completed(1)  # not due
    assert balancer.reinit_count == 0
    balancer.engine.state.max_epochs = 2
    assert not balancer.due(2)  # never after the last epoch
    balancer.engine.state.max_epochs = 10
    balancer.epoch_completed(2)
    assert balancer.reinit_count == 1 and not balancer.due(4)
    scalars = balancer.scalars()
    for name, p in network.named_parameters():
        if name.startswith("encoders."):
            i = int(name.split(".")[1])
            alpha = scalars[f"relearning/alpha/{MODALITIES[i]}"]
            gap = abs(
                scalars[f"relearning/purity_train/{MODALITIES[i]}"] - scalars[f"relearning/purity_val/{MODALITIES[i]}"]
            )
            assert alpha == pytest.approx(math.tanh(3.0 * gap), abs=1e-6)
            torch.testing.assert_close(p.detach(), trained[name] - alpha * 1.0)  # init = trained − 1
        else:
            torch.testing.assert_close(p.detach(), trained[name])
    restored = RelearningBalancer(MODALITIES)
    restored.load_state_dict(balancer.state_dict())
    assert restored.reinit_count == 1 and restored.initial is not None
    # activity (docs/methods.md §0.3): one reset, its α per modality, kept across a resume
    activity = balancer.activity()
    assert activity["relearning/resets"] == 1.0
    assert activity[f"relearning/alpha/{MODALITIES[0]}/reset1"] == scalars[f"relearning/alpha/{MODALITIES[0]}"]
    assert restored.activity() == activity


def test_per_sample_features_for_classification_tasks():
    tokens = torch.arange(24.0).view(2, 3, 4)  # (B, L, C) token sequences
    x, y = voxel_samples(tokens, torch.tensor([[0.0, 1.0], [1.0, 0.0]]), per_class=1)
    torch.testing.assert_close(x, tokens.mean(1))
    assert y.tolist() == [1, 0]  # arg-max of one-hot targets
    _, y = voxel_samples(torch.randn(3, 5), torch.tensor([-2.6, 0.2, 1.7]), per_class=1)
    assert y.tolist() == [-3, 0, 2]  # real scores rounded into classes


def test_heldout_loader_defaults_to_the_trainers_validator():
    from ignite.engine import Engine
    from monai.engines import Evaluator
    from monai.handlers import ValidationHandler

    validation_batches = _batches(1, 16, 3)
    validator = Evaluator(device="cpu", val_data_loader=validation_batches)
    trainer = Engine(lambda engine, batch: None)
    ValidationHandler(validator=validator, interval=2, epoch_level=True).attach(trainer)
    assert find_validation_loader(trainer) is validation_batches
    assert find_validation_loader(Engine(lambda engine, batch: None)) is None
    balancer = RelearningBalancer(MODALITIES, reinit_epoch=1)
    balancer.engine = SimpleNamespace(network=None)
    with pytest.raises(RuntimeError, match="held-out"):
        balancer.epoch_completed(1)


def test_minmax_scale_per_feature():
    x = torch.tensor([[0.0, 5.0, 2.0], [10.0, 5.0, 4.0], [5.0, 5.0, 3.0]])
    scaled = minmax_scale(x)
    assert scaled[:, 0].tolist() == pytest.approx([-1.0, 1.0, 0.0])
    assert scaled[:, 1].tolist() == pytest.approx([-1.0, -1.0, -1.0])  # constant: the lower end, as scikit-learn
    assert scaled[:, 2].tolist() == pytest.approx([-1.0, 1.0, 0.0])


def test_minmax_scale_lets_a_small_feature_separate_the_clusters():
    # the classes differ only in a feature with a tiny range; a wide noise feature dominates raw distances
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(200) % 2
    x = torch.stack([labels.float() * 0.01, torch.rand(200, generator=g) * 10], 1)
    raw = cluster_purity(kmeans(x, 2, generator=torch.Generator().manual_seed(1))[0], labels)
    scaled = cluster_purity(kmeans(minmax_scale(x), 2, generator=torch.Generator().manual_seed(1))[0], labels)
    assert scaled > raw
    with pytest.raises(ValueError, match="scale"):
        RelearningBalancer(MODALITIES, scale="zscore")
