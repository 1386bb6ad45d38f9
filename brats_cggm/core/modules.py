"""Typed access to the submodules a multimodal network is known by (``encoders``, ``output_layer``).

``nn.Module.__getattr__`` is typed as returning ``Tensor | Module``; these accessors check at run time what
the balancers and the trainer rely on, so that a network missing a part fails with a message naming it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from brats_cggm.core.outputs import MultimodalOutput

__all__ = ["child_module", "forward_features", "module_list", "output_weight", "tensor_attribute"]


def child_module(module: nn.Module, name: str) -> nn.Module:
    """The submodule ``module.<name>``.

    Args:
        module: the parent module.
        name: the attribute holding the submodule.

    Returns:
        The submodule.

    Raises:
        TypeError: ``module.<name>`` is missing or not a module.
    """
    child = getattr(module, name, None)
    if not isinstance(child, nn.Module):
        raise TypeError(f"{type(module).__name__}.{name} is not a module (got {type(child).__name__}).")
    return child


def module_list(module: nn.Module, name: str) -> nn.ModuleList:
    """The :class:`~torch.nn.ModuleList` ``module.<name>`` (e.g. a network's ``encoders``, one per modality).

    Args:
        module: the parent module.
        name: the attribute holding the list.

    Returns:
        The list.

    Raises:
        TypeError: ``module.<name>`` is missing or not a ModuleList.
    """
    child = getattr(module, name, None)
    if not isinstance(child, nn.ModuleList):
        raise TypeError(f"{type(module).__name__}.{name} is not a ModuleList (got {type(child).__name__}).")
    return child


def tensor_attribute(module: nn.Module, name: str) -> torch.Tensor:
    """The parameter or buffer ``module.<name>`` (e.g. a layer's ``weight``).

    Args:
        module: the module.
        name: the attribute holding the tensor.

    Returns:
        The tensor.

    Raises:
        TypeError: ``module.<name>`` is missing or not a tensor.
    """
    value = getattr(module, name, None)
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{type(module).__name__}.{name} is not a tensor (got {type(value).__name__}).")
    return value


def output_weight(module: nn.Module) -> torch.Tensor:
    """The weight of ``module.output_layer``: the last layer of the fusion head or of an auxiliary head.

    Args:
        module: the network or head.

    Returns:
        ``module.output_layer.weight``.

    Raises:
        TypeError: ``module`` has no ``output_layer`` module with a ``weight`` tensor.
    """
    return tensor_attribute(child_module(module, "output_layer"), "weight")


def forward_features(network: nn.Module, *args: Any, **kwargs: Any) -> MultimodalOutput:
    """``network.forward_features(*args, **kwargs)``: the fused logits with the per-modality features.

    Args:
        network: a multimodal network (:class:`~brats_cggm.core.outputs.MultimodalOutput` from ``forward_features``).
        *args: the inputs.
        **kwargs: e.g. ``feature_hook``.

    Returns:
        The network's output.

    Raises:
        TypeError: ``network`` has no ``forward_features`` method.
    """
    method = getattr(network, "forward_features", None)
    if not callable(method):
        raise TypeError(f"{type(network).__name__} has no forward_features method.")
    return method(*args, **kwargs)
