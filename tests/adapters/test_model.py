"""The sequence adapters' transformer under an availability mask: absent modalities take no part."""

from __future__ import annotations

import pytest
import torch

from brats_cggm.adapters.model import MultimodalTransformer, SequenceAuxiliaryHeads

MODALITIES = ("text", "audio", "vision")
DIMS = (6, 4, 5)


@pytest.fixture
def network() -> MultimodalTransformer:
    torch.manual_seed(0)
    return MultimodalTransformer(MODALITIES, DIMS, 2, d_model=8, hidden_dim=8, num_heads=2, dropout=0.0).eval()


@pytest.fixture
def inputs() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return {m: torch.randn(3, 5, d) for m, d in zip(MODALITIES, DIMS)}


def test_an_absent_modality_encoder_does_not_run_and_its_input_is_not_read(network, inputs):
    calls: list[int] = []
    network.encoders[1].register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    available = torch.tensor([[True, False, True], [True, True, False], [True, False, True]])
    out = network.forward_features(inputs, available=available)
    assert calls == [1]  # run on the one sample that has it
    changed = dict(inputs, audio=inputs["audio"].clone())
    changed["audio"][[0, 2]] = 100.0
    torch.testing.assert_close(network.forward_features(changed, available=available).logits, out.logits)
    heads = SequenceAuxiliaryHeads.for_network(network)
    none_has_it = network.forward_features(inputs, available=torch.tensor([[True, False, True]] * 3))
    assert none_has_it.features[1] is None and heads(none_has_it.features)[1] is None


def test_each_sample_is_predicted_from_its_own_subset(network, inputs):
    available = torch.tensor([[True, False, True], [False, True, True], [True, True, True]])
    batched = network.forward_features(inputs, available=available).logits
    for n in range(3):
        single = {m: v[n : n + 1] for m, v in inputs.items()}
        expected = network.forward_features(single, available=available[n : n + 1]).logits
        torch.testing.assert_close(batched[n : n + 1], expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(batched[2:], network({m: v[2:] for m, v in inputs.items()}), atol=1e-5, rtol=0)


def test_a_fusion_mask_leaves_a_modality_out_of_fusion_only(network, inputs):
    fusion_mask = torch.tensor([[True, False, True]] * 3)
    dropped = network.forward_features(inputs, fusion_mask=fusion_mask)
    absent = network.forward_features(inputs, available=fusion_mask)
    torch.testing.assert_close(dropped.logits, absent.logits, atol=1e-5, rtol=0)
    assert dropped.features[1] is not None  # the encoder still ran, for its auxiliary head
