"""Multi-encoder 3D U-Net for BraTS region segmentation, and its per-modality auxiliary heads.

The network has one convolutional encoder per MRI modality, fuses the modality features at every scale
(concatenation followed by a 1x1x1 convolution), decodes the fused pyramid with a single shared decoder and
predicts the three BraTS regions (TC, WT, ET) as raw logits. ``forward_features`` exposes the per-modality
encoder outputs so that Classifier-Guided Gradient Modulation (CGGM) can attach one auxiliary segmentation
head per modality (:class:`AuxiliaryHeads`) whose last layer has the same shape as the fusion head's last
layer (``network.output_layer``): a light head (:class:`SegmentationAuxHead`, the default) or a full decoder
like the network's (:class:`DecoderAuxHead`, as the CGGM authors' classifiers).

Parameter counts measured for 4 modalities and 3 output regions (``sum(p.numel() for p in m.parameters())``):

============  =======================  ============  ==============================================  ==================
preset        features                 network       light heads (4 heads, ``channels=8``)           decoder heads (4)
============  =======================  ============  ==============================================  ==================
``"cpu"``     (8, 16, 32, 64)          1,045,091     ``output_stride=2``: 11,084; ``=1``: 11,372     522,476
``"full"``    (32, 64, 128, 256, 320)  43,286,083    ``output_stride=2``: 33,260; ``=1``: 34,316     32,206,732
============  =======================  ============  ==============================================  ==================

For comparison, MONAI ``SegResNet(init_filters=32, in_channels=4, out_channels=3)`` has 18.8 M parameters
and a single-encoder residual ``DynUNet`` with the ``"full"`` widths 16.7 M. The ``"full"`` preset spends
34.5 M on its four encoders (8.6 M each), 8.1 M on the shared decoder and 0.8 M on the fusion modules.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import Convolution, UnetResBlock, UnetUpBlock
from monai.networks.layers.factories import Conv

from brats_cggm.core.availability import availability_of, check_availability, fused_modalities, fusion_weights
from brats_cggm.core.outputs import MultimodalOutput

__all__ = [
    "AUX_HEAD_KINDS",
    "NETWORK_PRESETS",
    "AuxiliaryHeads",
    "AvailabilityPredictor",
    "DecoderAuxHead",
    "FusedAndAuxiliaryPredictor",
    "ModalityEncoder",
    "MultiEncoderUNet",
    "SegmentationAuxHead",
    "UNetDecoder",
    "apply_speed_options",
    "build_network",
]

_INTERP_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}


def _dropout_arg(dropout: float) -> float | None:
    # MONAI blocks add a dropout layer whenever the argument is not None, even for p=0.
    return dropout if dropout > 0 else None


class ModalityEncoder(nn.Module):
    """Convolutional encoder of one modality, returning the feature pyramid.

    Level 0 is a residual block at full resolution; each following level is a residual block whose first
    3x3x3 convolution has stride 2 (nnU-Net / DynUNet style strided-conv downsampling).

    Args:
        in_channels: number of input channels (1 for one MRI modality).
        features: width of each level, finest first.
        spatial_dims: number of spatial dimensions.
        norm: normalisation type and arguments (MONAI factory format).
        act: activation type and arguments (MONAI factory format).
        dropout: dropout probability inside the residual blocks.
    """

    def __init__(
        self,
        in_channels: int,
        features: Sequence[int],
        spatial_dims: int = 3,
        norm: tuple | str = ("instance", {"affine": True}),
        act: tuple | str = ("leakyrelu", {"negative_slope": 0.01, "inplace": True}),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        widths = [in_channels, *features]
        self.levels = nn.ModuleList(
            UnetResBlock(
                spatial_dims,
                widths[k],
                widths[k + 1],
                kernel_size=3,
                stride=1 if k == 0 else 2,
                norm_name=norm,
                act_name=act,
                dropout=_dropout_arg(dropout),
            )
            for k in range(len(features))
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Encode one modality.

        Args:
            x: input of shape (B, in_channels, *spatial).

        Returns:
            One tensor per level, finest first; level ``k`` has ``features[k]`` channels and spatial size
            ``spatial / 2**k``.
        """
        outputs: list[torch.Tensor] = []
        for level in self.levels:
            x = level(x)
            outputs.append(x)
        return outputs


class UNetDecoder(nn.Module):
    """U-Net up-sampling path: transposed convolution, concatenation with the skip, two 3x3x3 convolutions.

    Args:
        features: width of each level, finest first (the last entry is the bottleneck).
        spatial_dims: number of spatial dimensions.
        norm: normalisation type and arguments.
        act: activation type and arguments.
        dropout: dropout probability inside the convolution blocks.
    """

    def __init__(
        self,
        features: Sequence[int],
        spatial_dims: int = 3,
        norm: tuple | str = ("instance", {"affine": True}),
        act: tuple | str = ("leakyrelu", {"negative_slope": 0.01, "inplace": True}),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        # Deepest block first, in the order they are applied.
        self.blocks = nn.ModuleList(
            UnetUpBlock(
                spatial_dims,
                features[k + 1],
                features[k],
                kernel_size=3,
                stride=1,
                upsample_kernel_size=2,
                norm_name=norm,
                act_name=act,
                dropout=_dropout_arg(dropout),
            )
            for k in reversed(range(len(features) - 1))
        )

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor:
        """Decode a feature pyramid.

        Args:
            skips: one tensor per level, finest first; the last one is the bottleneck.

        Returns:
            Tensor with ``features[0]`` channels at the resolution of ``skips[0]``.
        """
        h = skips[-1]
        n = len(skips)
        for i, block in enumerate(self.blocks):
            h = block(h, skips[n - 2 - i])
        return h


class MultiEncoderUNet(nn.Module):
    """3D U-Net with one encoder per modality, per-scale fusion and one shared decoder.

    Encoder ``i`` sees input channel ``i`` only. At every level the ``M`` modality features are concatenated
    and reduced to ``features[k]`` channels by a 1x1x1 convolution with normalisation and activation (the
    fusion module); the fused pyramid is decoded by a shared U-Net decoder and ``output_layer`` maps it to
    the region logits. ``output_layer`` is applied last, with nothing after it, so that a CGGM balancer can
    re-apply it to a detached ``head_input``.

    Args:
        modalities: modality names, in the order of the input channels.
        out_channels: number of predicted regions (TC, WT, ET).
        features: width of each level, finest first; each next level halves the resolution and the last
            one is the bottleneck.
        spatial_dims: number of spatial dimensions.
        norm: normalisation type and arguments (MONAI factory format).
        act: activation type and arguments (MONAI factory format).
        dropout: dropout probability inside the convolution blocks.
    """

    def __init__(
        self,
        modalities: Sequence[str] = ("flair", "t1ce", "t1", "t2"),
        out_channels: int = 3,
        features: Sequence[int] = (8, 16, 32, 64),
        spatial_dims: int = 3,
        norm: tuple | str = ("instance", {"affine": True}),
        act: tuple | str = ("leakyrelu", {"negative_slope": 0.01, "inplace": True}),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if len(modalities) < 1:
            raise ValueError("at least one modality is required.")
        if len(features) < 2:
            raise ValueError(f"features needs at least two levels, got {tuple(features)}.")
        self.modalities = tuple(modalities)
        self.features = tuple(int(f) for f in features)
        self.spatial_dims = spatial_dims
        self.out_channels = out_channels
        self.norm = norm
        self.act = act
        self.dropout = dropout
        #: every input spatial size must be a multiple of this.
        self.divisor = 2 ** (len(self.features) - 1)
        num_mod = len(self.modalities)

        self.encoders = nn.ModuleList(
            ModalityEncoder(1, self.features, spatial_dims, norm, act, dropout) for _ in self.modalities
        )
        self.fusion = nn.ModuleList(
            Convolution(
                spatial_dims,
                num_mod * f,
                f,
                kernel_size=1,
                norm=norm,
                act=act,
                dropout=_dropout_arg(dropout),
            )
            for f in self.features
        )
        self.decoder = UNetDecoder(self.features, spatial_dims, norm, act, dropout)
        self.output_layer = Conv[Conv.CONV, spatial_dims](self.features[0], out_channels, kernel_size=1)

    def encoder_parameters(self, index: int) -> Iterator[nn.Parameter]:
        """Parameters of the encoder of modality ``index``.

        Args:
            index: modality index, in the order of ``modalities``.

        Returns:
            An iterator over that encoder's parameters.
        """
        return self.encoders[index].parameters()

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``x`` has one channel per modality and divisible spatial sizes.

        Args:
            x: network input of shape (B, M, *spatial).
        """
        shape = tuple(x.shape)
        if x.ndim != self.spatial_dims + 2 or shape[1] != len(self.modalities):
            raise ValueError(
                f"expected input of shape (B, {len(self.modalities)}, *spatial) with {self.spatial_dims} "
                f"spatial dims for modalities {self.modalities}, got {shape}."
            )
        if any(s % self.divisor for s in shape[2:]):
            raise ValueError(
                f"input spatial shape {shape[2:]} must be divisible by {self.divisor} "
                f"(2**(len(features)-1) for features={self.features}); got input of shape {shape}."
            )

    def encode(self, x: torch.Tensor, available: torch.Tensor | None = None) -> list[list[torch.Tensor] | None]:
        """Run each modality's encoder on its own channel, for the samples that have that modality.

        Args:
            x: input of shape (B, M, *spatial).
            available: ``(B, M)`` boolean availability mask (:mod:`brats_cggm.core.availability`); None
                means every modality of every sample.

        Returns:
            ``features[i][k]``: level ``k`` of modality ``i``, zeros for the samples without it; None where
            no sample has modality ``i`` (its encoder did not run).
        """
        features: list[list[torch.Tensor] | None] = []
        for i, encoder in enumerate(self.encoders):
            channel = x[:, i : i + 1]
            rows = None if available is None else available[:, i]
            if rows is None or bool(rows.all()):
                features.append(encoder(channel))
            elif bool(rows.any()):
                features.append([_scatter_rows(level, rows, x.shape[0]) for level in encoder(channel[rows])])
            else:
                features.append(None)
        return features

    def fuse_and_decode(
        self, features: Sequence[Sequence[torch.Tensor] | None], weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Fuse the modality features at every level and decode them.

        The fusion is masked concatenation with rescaling (:func:`~brats_cggm.core.availability.fusion_weights`):
        modality ``i``'s features enter the concatenation multiplied by ``weights[:, i]``, zeros for a
        modality without features.

        Args:
            features: ``features[i][k]``, as returned by :meth:`encode`.
            weights: ``(B, M)`` fusion weights; None fuses every modality with weight 1.

        Returns:
            The input of ``output_layer``: ``features[0]`` channels at full resolution.
        """
        reference = next(f for f in features if f is not None)
        fused: list[torch.Tensor] = []
        for k, fuse in enumerate(self.fusion):
            parts = []
            for i, modality in enumerate(features):
                if modality is None:
                    parts.append(torch.zeros_like(reference[k]))
                elif weights is None:
                    parts.append(modality[k])
                else:
                    shape = (-1,) + (1,) * (modality[k].ndim - 1)
                    parts.append(modality[k] * weights[:, i].to(modality[k]).view(shape))
            fused.append(fuse(torch.cat(parts, dim=1)))
        return self.decoder(fused)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Region logits (no sigmoid) of shape (B, out_channels, *spatial); TorchScript-compatible."""
        features: list[list[torch.Tensor]] = [encoder(x[:, i : i + 1]) for i, encoder in enumerate(self.encoders)]
        fused: list[torch.Tensor] = []
        for k, fuse in enumerate(self.fusion):
            fused.append(fuse(torch.cat([f[k] for f in features], dim=1)))
        return self.output_layer(self.decoder(fused))

    @torch.jit.unused
    def forward_features(
        self, x: torch.Tensor, available: torch.Tensor | None = None, fusion_mask: torch.Tensor | None = None
    ) -> MultimodalOutput:
        """Forward pass that also returns the per-modality encoder features and the head input.

        Args:
            x: input of shape (B, M, *spatial), spatial sizes divisible by ``2**(len(features)-1)``; the
                channels of absent modalities are never read.
            available: ``(B, M)`` boolean mask of the modalities each sample has (None: all); an absent
                modality's encoder does not run and its features take no part in fusion.
            fusion_mask: ``(B, M)`` boolean mask of the modalities the fusion may use in this step (a
                balancer's drop, e.g. OPM); their encoders still run. A sample it would leave without a
                modality fuses all its available ones.

        Returns:
            ``MultimodalOutput`` with the logits, the encoder outputs (``features[i][k]``, None where no
            sample has modality ``i``), the input of ``output_layer`` and the availability mask.

        Raises:
            ValueError: when the input shape or a mask does not match the network.
        """
        self.check_input(x)
        batch, num = x.shape[0], len(self.modalities)
        if available is not None:
            available = check_availability(available, batch, num).to(x.device)
        features = self.encode(x, available)
        fused = fused_modalities(available, fusion_mask, batch, num)
        weights = None if fused is None else fusion_weights(fused)
        h = self.fuse_and_decode(features, weights)
        return MultimodalOutput(logits=self.output_layer(h), features=features, head_input=h, available=available)


def _scatter_rows(values: torch.Tensor, rows: torch.Tensor, batch_size: int) -> torch.Tensor:
    """A ``(batch_size, ...)`` tensor holding ``values`` at ``rows`` and zeros elsewhere."""
    full = values.new_zeros((batch_size, *values.shape[1:]))
    return full.index_put((rows.nonzero().flatten(),), values)


class AvailabilityPredictor(nn.Module):
    """The network's logits predicted from the modalities ``present`` only (the others' channels unread).

    Suitable as the ``predictor`` of ``monai.inferers.sliding_window_inference``.

    Args:
        network: the multi-encoder network.
        present: indices of the modalities present, in the network's order.
    """

    def __init__(self, network: MultiEncoderUNet, present: Sequence[int]) -> None:
        super().__init__()
        self.network = network
        self.present = tuple(int(i) for i in present)
        availability_of(self.present, 1, len(network.modalities))  # validates the subset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape (B, out_channels, *spatial)."""
        available = availability_of(self.present, x.shape[0], len(self.network.modalities), x.device)
        return self.network.forward_features(x, available=available).logits


class SegmentationAuxHead(nn.Module):
    """Light per-modality segmentation head (a CGGM classifier ``f_i``) predicting at reduced resolution.

    Starting from the deepest level of one modality's feature pyramid, each level down to
    ``log2(output_stride)`` is projected to ``channels`` by a 1x1x1 convolution and added to the upsampled
    (linear interpolation) coarser result; a 3x3x3 convolution refines the sum, a 1x1x1 convolution maps it
    to ``features[0]`` channels and ``output_layer`` (same shape as the network's) gives the region logits.

    Args:
        features: the encoder widths, finest first (as ``MultiEncoderUNet.features``).
        out_channels: number of predicted regions; must match the network.
        channels: width of the head's internal path.
        output_stride: resolution reduction of the output: a power of two not larger than
            ``2**(len(features)-1)``.
        spatial_dims: number of spatial dimensions.
        norm: normalisation type and arguments.
        act: activation type and arguments.
    """

    def __init__(
        self,
        features: Sequence[int],
        out_channels: int = 3,
        channels: int = 8,
        output_stride: int = 2,
        spatial_dims: int = 3,
        norm: tuple | str = ("instance", {"affine": True}),
        act: tuple | str = ("leakyrelu", {"negative_slope": 0.01, "inplace": True}),
    ) -> None:
        super().__init__()
        features = tuple(int(f) for f in features)
        start = output_stride.bit_length() - 1
        if output_stride < 1 or 2**start != output_stride or start > len(features) - 1:
            raise ValueError(
                f"output_stride must be a power of two <= {2 ** (len(features) - 1)} "
                f"for features={features}, got {output_stride}."
            )
        self.features = features
        self.output_stride = output_stride
        self.start_level = start
        self.mode = _INTERP_MODES[spatial_dims]
        # Deepest level first, in the order they are applied.
        self.lateral = nn.ModuleList(
            Convolution(spatial_dims, features[k], channels, kernel_size=1, conv_only=True)
            for k in reversed(range(start, len(features)))
        )
        self.refine = Convolution(spatial_dims, channels, channels, kernel_size=3, norm=norm, act=act)
        self.project = Convolution(spatial_dims, channels, features[0], kernel_size=1, norm=None, act=act)
        self.output_layer = Conv[Conv.CONV, spatial_dims](features[0], out_channels, kernel_size=1)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Predict region logits from one modality's feature pyramid.

        Args:
            features: that modality's encoder outputs, finest first.

        Returns:
            Logits of shape (B, out_channels, *spatial / output_stride).
        """
        if len(features) != len(self.features):
            raise ValueError(f"expected {len(self.features)} feature levels, got {len(features)}.")
        h = self.lateral[0](features[-1])
        for i, lateral in enumerate(self.lateral[1:], start=1):
            skip = features[len(features) - 1 - i]
            h = F.interpolate(h, size=skip.shape[2:], mode=self.mode, align_corners=False) + lateral(skip)
        return self.output_layer(self.project(self.refine(h)))


class DecoderAuxHead(nn.Module):
    """Full per-modality segmentation decoder (a CGGM classifier ``f_i`` as the CGGM authors built it).

    A :class:`UNetDecoder` of the network's widths applied to one modality's whole feature pyramid (its
    encoder outputs at every level) and an ``output_layer`` of the network's shape: the network's decoder
    and last layer without the fusion, predicting at full resolution.

    Args:
        features: the encoder widths, finest first (as ``MultiEncoderUNet.features``).
        out_channels: number of predicted regions; must match the network.
        spatial_dims: number of spatial dimensions.
        norm: normalisation type and arguments.
        act: activation type and arguments.
        dropout: dropout probability inside the decoder's convolution blocks.
    """

    def __init__(
        self,
        features: Sequence[int],
        out_channels: int = 3,
        spatial_dims: int = 3,
        norm: tuple | str = ("instance", {"affine": True}),
        act: tuple | str = ("leakyrelu", {"negative_slope": 0.01, "inplace": True}),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.features = tuple(int(f) for f in features)
        self.output_stride = 1
        self.decoder = UNetDecoder(self.features, spatial_dims, norm, act, dropout)
        self.output_layer = Conv[Conv.CONV, spatial_dims](self.features[0], out_channels, kernel_size=1)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Predict region logits from one modality's feature pyramid.

        Args:
            features: that modality's encoder outputs, finest first.

        Returns:
            Logits of shape (B, out_channels, *spatial) at the resolution of ``features[0]``.
        """
        if len(features) != len(self.features):
            raise ValueError(f"expected {len(self.features)} feature levels, got {len(features)}.")
        return self.output_layer(self.decoder(list(features)))


#: The kinds of auxiliary head (``AuxiliaryHeads(kind=...)``; the BraTS bundle's ``aux_head``).
AUX_HEAD_KINDS = ("light", "decoder")


class AuxiliaryHeads(nn.ModuleList):
    """One auxiliary head per modality; kept outside the network (and its export).

    Args:
        modalities: modality names, in the network's order.
        features: the encoder widths, finest first.
        out_channels: number of predicted regions.
        channels: width of each light head's internal path (``kind="light"`` only).
        output_stride: resolution reduction of the light heads' outputs (``kind="light"`` only; a decoder
            head predicts at full resolution).
        spatial_dims: number of spatial dimensions.
        norm: normalisation type and arguments.
        act: activation type and arguments.
        kind: ``"light"`` (:class:`SegmentationAuxHead`, the default) or ``"decoder"`` (:class:`DecoderAuxHead`,
            a full U-Net decoder per modality, as the CGGM authors' classifiers; ``docs/methods.md`` §1.1).
        dropout: dropout probability inside a decoder head (``kind="decoder"`` only).
    """

    def __init__(
        self,
        modalities: Sequence[str],
        features: Sequence[int],
        out_channels: int = 3,
        channels: int = 8,
        output_stride: int = 2,
        spatial_dims: int = 3,
        norm: tuple | str = ("instance", {"affine": True}),
        act: tuple | str = ("leakyrelu", {"negative_slope": 0.01, "inplace": True}),
        kind: str = "light",
        dropout: float = 0.0,
    ) -> None:
        if kind not in AUX_HEAD_KINDS:
            raise ValueError(f"kind must be one of {AUX_HEAD_KINDS}, got {kind!r}.")
        heads: Iterable[nn.Module]
        if kind == "light":
            heads = (
                SegmentationAuxHead(features, out_channels, channels, output_stride, spatial_dims, norm, act)
                for _ in modalities
            )
        else:
            heads = (DecoderAuxHead(features, out_channels, spatial_dims, norm, act, dropout) for _ in modalities)
            output_stride = 1
        super().__init__(heads)
        self.modalities = tuple(modalities)
        self.kind = kind
        self.output_stride = output_stride

    @classmethod
    def for_network(
        cls, network: MultiEncoderUNet, output_stride: int = 2, channels: int = 8, kind: str = "light"
    ) -> AuxiliaryHeads:
        """Build heads matched to ``network``'s modalities, widths, outputs, normalisation and activation.

        Args:
            network: the multi-encoder network whose ``forward_features(...).features`` the heads read.
            output_stride: resolution reduction of the light heads' outputs.
            channels: width of each light head's internal path.
            kind: ``"light"`` or ``"decoder"`` (a decoder head also takes the network's dropout).

        Returns:
            The auxiliary heads.
        """
        return cls(
            network.modalities,
            network.features,
            out_channels=network.out_channels,
            channels=channels,
            output_stride=output_stride,
            spatial_dims=network.spatial_dims,
            norm=network.norm,
            act=network.act,
            kind=kind,
            dropout=network.dropout,
        )

    def forward(self, features: list) -> list[torch.Tensor | None]:
        """Apply head ``i`` to modality ``i``'s feature pyramid.

        Args:
            features: ``MultimodalOutput.features`` (detach it first to keep head losses off the encoders),
                with None for an absent modality.

        Returns:
            One logits tensor per modality; None (the head did not run) for an absent one.
        """
        if len(features) != len(self):
            raise ValueError(f"expected features for {len(self)} modalities, got {len(features)}.")
        return [None if f is None else head(f) for head, f in zip(self, features, strict=True)]


class FusedAndAuxiliaryPredictor(nn.Module):
    """Validation predictor returning the fused and every auxiliary prediction from one forward pass.

    Suitable as the ``predictor`` of ``monai.inferers.sliding_window_inference`` (dict outputs).

    Args:
        network: the multi-encoder network.
        heads: its auxiliary heads.
    """

    def __init__(self, network: MultiEncoderUNet, heads: AuxiliaryHeads) -> None:
        super().__init__()
        if len(heads) != len(network.modalities):
            raise ValueError(f"{len(heads)} auxiliary heads for {len(network.modalities)} modalities.")
        self.network = network
        self.heads = heads

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Predict.

        Args:
            x: input of shape (B, M, *spatial).

        Returns:
            ``"pred"``: the network logits; ``f"pred_{name}"``: modality ``name``'s head logits, linearly
            upsampled to the input's spatial size.
        """
        out = self.network.forward_features(x)
        aux = self.heads([[t.detach() for t in f] for f in out.features])
        size = x.shape[2:]
        mode = _INTERP_MODES[self.network.spatial_dims]
        preds: dict[str, Any] = {"pred": out.logits}
        for name, logits in zip(self.network.modalities, aux, strict=True):
            assert logits is not None  # every modality is present
            if logits.shape[2:] != size:
                logits = F.interpolate(logits, size=size, mode=mode, align_corners=False)
            preds[f"pred_{name}"] = logits
        return preds


#: Constructor arguments of :class:`MultiEncoderUNet` for each preset (see the module docstring for sizes).
NETWORK_PRESETS: dict[str, dict] = {
    "cpu": {"features": (8, 16, 32, 64)},
    "full": {"features": (32, 64, 128, 256, 320)},
}


def build_network(
    preset: str = "cpu", modalities: Sequence[str] = ("flair", "t1ce", "t1", "t2"), **overrides: Any
) -> MultiEncoderUNet:
    """Build a :class:`MultiEncoderUNet` from a preset.

    Args:
        preset: a key of :data:`NETWORK_PRESETS`.
        modalities: modality names, in the order of the input channels.
        overrides: constructor arguments replacing the preset's.

    Returns:
        The network.

    Raises:
        ValueError: for an unknown preset.
    """
    if preset not in NETWORK_PRESETS:
        raise ValueError(f"unknown network preset {preset!r}; available: {sorted(NETWORK_PRESETS)}.")
    kwargs = {**NETWORK_PRESETS[preset], **overrides}
    return MultiEncoderUNet(modalities=modalities, **kwargs)


def apply_speed_options(modules: Iterable[torch.nn.Module], channels_last: bool = False, compile: bool = False) -> None:
    """Apply ``channels_last_3d`` and ``torch.compile`` to a network and its heads, in place.

    ``torch.compile(network)`` would not help the trainer, which calls ``network.forward_features`` (not
    ``forward``); so the blocks that ``forward_features`` calls (encoders, fusion modules, decoder) and each
    auxiliary head are compiled in place with ``nn.Module.compile``.

    Args:
        modules: the network and the auxiliary heads.
        channels_last: convert 5-D parameters to ``torch.channels_last_3d``.
        compile: compile the blocks.
    """
    for module in modules:
        if channels_last:
            # nn.Module.to takes memory_format, which torch's overloads of it leave out
            module.to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]
        if compile:
            blocks = [*getattr(module, "encoders", []), *getattr(module, "fusion", [])]
            if hasattr(module, "decoder"):
                blocks.append(module.decoder)
            if isinstance(module, torch.nn.ModuleList) and not blocks:
                blocks = list(module)  # the auxiliary heads
            for block in blocks or [module]:
                block.compile()
