"""Typed access to a network's parts: the accessors return them and name what is missing."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from brats_cggm.core.modules import child_module, forward_features, module_list, output_weight, tensor_attribute
from brats_cggm.core.outputs import MultimodalOutput


class _Network(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoders = nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 2)])
        self.output_layer = nn.Linear(2, 1)

    def forward_features(self, x: torch.Tensor, feature_hook=None) -> MultimodalOutput:
        features = [encoder(x) for encoder in self.encoders]
        return MultimodalOutput(logits=self.output_layer(features[0]), features=features, head_input=features[0])


def test_accessors_return_the_parts():
    network = _Network()
    assert module_list(network, "encoders") is network.encoders
    assert child_module(network, "output_layer") is network.output_layer
    assert tensor_attribute(network.output_layer, "weight") is network.output_layer.weight
    assert output_weight(network) is network.output_layer.weight
    out = forward_features(network, torch.ones(1, 2))
    assert isinstance(out, MultimodalOutput) and len(out.features) == 2


def test_accessors_name_what_is_missing():
    network = _Network()
    with pytest.raises(TypeError, match=r"_Network.decoder is not a module"):
        child_module(network, "decoder")
    with pytest.raises(TypeError, match=r"_Network.output_layer is not a ModuleList"):
        module_list(network, "output_layer")
    with pytest.raises(TypeError, match=r"Linear.scale is not a tensor"):
        tensor_attribute(network.output_layer, "scale")
    with pytest.raises(TypeError, match=r"Linear has no forward_features"):
        forward_features(nn.Linear(2, 2), torch.ones(1, 2))
