"""Tests of the multi-encoder U-Net and its auxiliary heads (tiny widths, 32^3 inputs)."""

from __future__ import annotations

import pytest
import torch
from monai.inferers import sliding_window_inference

from brats_cggm.brats.model import (
    NETWORK_PRESETS,
    AuxiliaryHeads,
    AvailabilityPredictor,
    DecoderAuxHead,
    FusedAndAuxiliaryPredictor,
    MultiEncoderUNet,
    SegmentationAuxHead,
    build_network,
)
from brats_cggm.core.availability import availability_of, fusion_weights
from brats_cggm.core.outputs import MultimodalOutput

MODALITIES = ("flair", "t1ce", "t1", "t2")
FEATURES = (4, 8, 16)
SIZE = 32


@pytest.fixture
def net() -> MultiEncoderUNet:
    torch.manual_seed(0)
    return MultiEncoderUNet(MODALITIES, out_channels=3, features=FEATURES)


@pytest.fixture
def x() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(2, len(MODALITIES), SIZE, SIZE, SIZE)


def _grad_norm(module: torch.nn.Module) -> float:
    return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)


def test_forward_shapes(net, x):
    assert net(x).shape == (2, 3, SIZE, SIZE, SIZE)
    out = net.forward_features(x)
    assert isinstance(out, MultimodalOutput)
    assert out.logits.shape == (2, 3, SIZE, SIZE, SIZE)
    assert out.head_input.shape == (2, FEATURES[0], SIZE, SIZE, SIZE)
    assert len(out.features) == len(MODALITIES)
    for levels in out.features:
        assert [tuple(t.shape) for t in levels] == [
            (2, f, SIZE // 2**k, SIZE // 2**k, SIZE // 2**k) for k, f in enumerate(FEATURES)
        ]
    torch.testing.assert_close(net.output_layer(out.head_input), out.logits)
    assert net.modalities == MODALITIES and net.features == FEATURES
    assert len(net.encoders) == len(MODALITIES) and len(net.fusion) == len(FEATURES)


@pytest.mark.parametrize("stride", [1, 2])
def test_aux_heads_shapes(net, x, stride):
    heads = AuxiliaryHeads.for_network(net, output_stride=stride)
    assert heads.output_stride == stride and len(heads) == len(MODALITIES)
    out = net.forward_features(x)
    preds = heads(out.features)
    s = SIZE // stride
    assert [tuple(p.shape) for p in preds] == [(2, 3, s, s, s)] * len(MODALITIES)
    for head in heads:
        assert isinstance(head, SegmentationAuxHead)
        assert head.output_layer.weight.shape == net.output_layer.weight.shape
        assert head.output_layer.bias.shape == net.output_layer.bias.shape


def test_decoder_heads_predict_at_full_resolution_with_the_networks_last_layer(net, x):
    heads = AuxiliaryHeads.for_network(net, kind="decoder")
    assert heads.kind == "decoder" and heads.output_stride == 1 and len(heads) == len(MODALITIES)
    out = net.forward_features(x)
    preds = heads([[t.detach() for t in f] for f in out.features])
    assert [tuple(p.shape) for p in preds] == [(2, 3, SIZE, SIZE, SIZE)] * len(MODALITIES)
    for head in heads:
        assert isinstance(head, DecoderAuxHead)
        assert head.output_layer.weight.shape == net.output_layer.weight.shape
        assert head.output_layer.bias.shape == net.output_layer.bias.shape
        # the network's decoder, module for module: the same parameter shapes
        assert [p.shape for p in head.decoder.parameters()] == [p.shape for p in net.decoder.parameters()]
    with pytest.raises(ValueError, match="feature levels"):
        heads[0](out.features[0][1:])


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_decoder_heads_cost_one_network_decoder_per_modality(net):
    decoder = AuxiliaryHeads.for_network(net, kind="decoder")
    per_decoder = _count(net.decoder) + _count(net.output_layer)
    assert _count(decoder) == len(MODALITIES) * per_decoder
    # the cpu preset's counts stated in docs/methods.md §1.1
    cpu = build_network("cpu", modalities=MODALITIES)
    assert (_count(AuxiliaryHeads.for_network(cpu)), _count(AuxiliaryHeads.for_network(cpu, kind="decoder"))) == (
        11084,
        522476,
    )


def test_light_heads_are_built_as_before_by_default(net, x):
    torch.manual_seed(3)
    default = AuxiliaryHeads.for_network(net)
    torch.manual_seed(3)
    before = torch.nn.ModuleList(
        SegmentationAuxHead(FEATURES, 3, 8, 2, 3, net.norm, net.act) for _ in MODALITIES
    )  # the construction before ``kind`` existed
    assert default.kind == "light"
    assert default.state_dict().keys() == before.state_dict().keys()
    for key, value in before.state_dict().items():
        assert torch.equal(default.state_dict()[key], value), key
    features = net.forward_features(x).features
    for new, old, f in zip(default, before, features, strict=True):
        assert torch.equal(new(f), old(f))


def test_unknown_head_kind(net):
    with pytest.raises(ValueError, match="kind"):
        AuxiliaryHeads.for_network(net, kind="deep")


def test_invalid_output_stride():
    with pytest.raises(ValueError, match="output_stride"):
        SegmentationAuxHead(FEATURES, output_stride=3)
    with pytest.raises(ValueError, match="output_stride"):
        SegmentationAuxHead(FEATURES, output_stride=8)


def test_detached_aux_loss_does_not_reach_encoders(net, x):
    heads = AuxiliaryHeads.for_network(net)
    out = net.forward_features(x)
    preds = heads([[t.detach() for t in f] for f in out.features])
    sum(p.square().mean() for p in preds).backward()
    assert all(p.grad is None or not p.grad.any() for p in net.parameters())
    assert all(_grad_norm(head) > 0 for head in heads)


def test_aux_loss_reaches_only_its_encoder(net, x):
    heads = AuxiliaryHeads.for_network(net)
    out = net.forward_features(x)
    heads[1](out.features[1]).square().mean().backward()
    assert _grad_norm(net.encoders[1]) > 0
    for j in (0, 2, 3):
        assert _grad_norm(net.encoders[j]) == 0
        assert _grad_norm(heads[j]) == 0
    assert _grad_norm(net.fusion) == 0 and _grad_norm(net.decoder) == 0


def _calls(module: torch.nn.Module) -> list[int]:
    calls: list[int] = []
    module.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    return calls


def test_an_absent_modality_encoder_never_runs_and_gets_no_gradient(net, x):
    calls = [_calls(encoder) for encoder in net.encoders]
    heads = AuxiliaryHeads.for_network(net)
    available = torch.tensor([[True, False, True, False], [True, False, False, True]])
    out = net.forward_features(x, available=available)
    aux = heads(out.features)
    assert [len(c) for c in calls] == [1, 0, 1, 1]
    assert calls[2] == [1] and calls[3] == [1]  # partly absent: run on the samples that have it only
    assert out.features[1] is None and aux[1] is None
    (out.logits.square().mean() + sum(a.square().mean() for a in aux if a is not None)).backward()
    assert all(p.grad is None for p in net.encoders[1].parameters())
    assert all(p.grad is None for p in heads[1].parameters())
    assert _grad_norm(net.encoders[0]) > 0 and _grad_norm(net.encoders[3]) > 0


def test_an_absent_modality_input_is_never_read(net, x):
    available = torch.tensor([[True, True, False, True], [True, True, False, True]])
    reference = net.forward_features(x, available=available).logits
    changed = x.clone()
    changed[:, 2] = torch.randn_like(changed[:, 2]) * 100
    torch.testing.assert_close(net.forward_features(changed, available=available).logits, reference)


def test_each_sample_is_predicted_from_its_own_subset(net, x):
    available = torch.tensor([[True, False, True, True], [False, True, True, False]])
    batched = net.forward_features(x, available=available).logits
    for n in range(2):
        single = net.forward_features(x[n : n + 1], available=available[n : n + 1]).logits
        torch.testing.assert_close(batched[n : n + 1], single, atol=1e-5, rtol=0)


def test_masked_fusion_rescales_the_present_modalities(net, x):
    subset = [0, 3]
    features = net.encode(x)
    absent = [f if i in subset else [torch.zeros_like(t) for t in f] for i, f in enumerate(features)]
    weights = fusion_weights(availability_of(subset, 2, 4))
    assert weights[0].tolist() == [2.0, 0.0, 0.0, 2.0]
    expected = net.output_layer(net.fuse_and_decode(absent, weights))
    predicted = AvailabilityPredictor(net, subset)(x)
    torch.testing.assert_close(predicted, expected, atol=1e-5, rtol=0)


def test_every_modality_available_is_the_plain_forward(net, x):
    full = net.forward_features(x, available=torch.ones(2, 4, dtype=torch.bool)).logits
    torch.testing.assert_close(full, net(x), atol=1e-6, rtol=0)


def test_a_fusion_mask_that_would_empty_a_sample_falls_back_to_its_available_modalities(net, x):
    available = torch.tensor([[True, True, False, False], [True, True, True, True]])
    fusion_mask = torch.tensor([[False, False, True, True], [True, True, True, True]])
    out = net.forward_features(x, available=available, fusion_mask=fusion_mask)
    torch.testing.assert_close(out.logits, net.forward_features(x, available=available).logits)


def test_invalid_masks_are_refused(net, x):
    with pytest.raises(ValueError, match="no modality"):
        net.forward_features(x, available=torch.tensor([[True] * 4, [False] * 4]))
    with pytest.raises(ValueError, match="shape"):
        net.forward_features(x, available=torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="empty"):
        AvailabilityPredictor(net, [])


def test_each_encoder_sees_only_its_modality(net, x):
    reference = net.forward_features(x).features
    perturbed = x.clone()
    perturbed[:, 2] += torch.randn_like(perturbed[:, 2])
    features = net.forward_features(perturbed).features
    for i in range(len(MODALITIES)):
        same = all(torch.equal(a, b) for a, b in zip(features[i], reference[i], strict=True))
        assert same == (i != 2)


def test_invalid_input_shapes(net):
    with pytest.raises(ValueError, match=r"\(2, 4, 32, 30, 32\)"):
        net.forward_features(torch.zeros(2, 4, 32, 30, 32))
    with pytest.raises(ValueError, match="modalities"):
        net.forward_features(torch.zeros(2, 3, 32, 32, 32))


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_torchscript_matches_eager(net, x):
    net.eval()
    scripted = torch.jit.script(net)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x))


@pytest.mark.parametrize("kind", ["light", "decoder"])
def test_fused_and_auxiliary_predictor(net, x, kind):
    predictor = FusedAndAuxiliaryPredictor(net, AuxiliaryHeads.for_network(net, kind=kind)).eval()
    keys = {"pred", *(f"pred_{m}" for m in MODALITIES)}
    with torch.no_grad():
        preds = predictor(x)
        assert set(preds) == keys
        assert all(p.shape == (2, 3, SIZE, SIZE, SIZE) for p in preds.values())
        torch.testing.assert_close(preds["pred"], net(x))
        windowed = sliding_window_inference(x, roi_size=(16, 16, 16), sw_batch_size=4, predictor=predictor)
    assert isinstance(windowed, dict) and set(windowed) == keys
    assert all(p.shape == (2, 3, SIZE, SIZE, SIZE) for p in windowed.values())


def test_build_network_presets():
    assert set(NETWORK_PRESETS) >= {"cpu", "full"}
    torch.manual_seed(0)
    cpu = build_network("cpu")
    assert cpu.features == (8, 16, 32, 64) and cpu.modalities == MODALITIES
    small = build_network("cpu", modalities=("t1", "t2"), features=(4, 8))
    assert small.features == (4, 8) and len(small.encoders) == 2
    assert NETWORK_PRESETS["cpu"]["features"] == (8, 16, 32, 64)
    assert tuple(NETWORK_PRESETS["full"]["features"]) == (32, 64, 128, 256, 320)
    with pytest.raises(ValueError, match="'huge'"):
        build_network("huge")
