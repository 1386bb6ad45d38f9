"""BraTS label conventions and the conversion between integer labels and the TC/WT/ET regions.

The network predicts three overlapping (hierarchical) regions, in the channel order of :data:`REGIONS`:

- ``tc``, tumour core: necrosis / non-enhancing tumour plus enhancing tumour;
- ``wt``, whole tumour: every tumour label, edema included;
- ``et``, enhancing tumour.

The integer labels that encode them differ between data releases (:data:`LABEL_CONVENTIONS`).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends, convert_to_dst_type

__all__ = [
    "LABEL_CONVENTIONS",
    "REGIONS",
    "ConvertToLabels",
    "ConvertToLabelsd",
    "ConvertToRegions",
    "ConvertToRegionsd",
    "LabelConvention",
    "check_labels",
    "get_label_convention",
    "label_values",
    "labels_to_regions",
    "matching_conventions",
    "regions_to_labels",
]

#: numpy or torch, kept through a function (``NdarrayOrTensor`` is their union).
_ArrayT = TypeVar("_ArrayT", np.ndarray, torch.Tensor)

#: Channel order of the region masks (and of the network output).
REGIONS: tuple[str, ...] = ("tc", "wt", "et")


@dataclass(frozen=True)
class LabelConvention:
    """How one data release encodes the tumour sub-regions as integers.

    Attributes:
        name: the convention's key in :data:`LABEL_CONVENTIONS`.
        names: every valid label value (background ``0`` included) and what it means.
        core: the label of tumour core that is not enhancing (necrosis / non-enhancing tumour).
        edema: the label of peritumoral edema.
        enhancing: the label of enhancing tumour.
    """

    name: str
    names: Mapping[int, str]
    core: int
    edema: int
    enhancing: int

    @property
    def values(self) -> tuple[int, ...]:
        """All valid label values, sorted."""
        return tuple(sorted(self.names))

    @property
    def region_labels(self) -> dict[str, tuple[int, ...]]:
        """The labels that make up each region of :data:`REGIONS`."""
        return {
            "tc": (self.core, self.enhancing),
            "wt": (self.core, self.edema, self.enhancing),
            "et": (self.enhancing,),
        }


#: The label conventions this package reads, keyed by name.
LABEL_CONVENTIONS: dict[str, LabelConvention] = {
    "brats2021": LabelConvention(
        name="brats2021",
        names={
            0: "background",
            1: "necrotic tumour core (NCR)",
            2: "peritumoral edema (ED)",
            4: "enhancing tumour (ET)",
        },
        core=1,
        edema=2,
        enhancing=4,
    ),
    "brats2023": LabelConvention(
        name="brats2023",
        names={
            0: "background",
            1: "necrotic tumour core (NCR)",
            2: "peritumoral edema (ED)",
            3: "enhancing tumour (ET)",
        },
        core=1,
        edema=2,
        enhancing=3,
    ),
    "msd": LabelConvention(
        name="msd",
        names={0: "background", 1: "edema", 2: "non-enhancing tumour", 3: "enhancing tumour"},
        core=2,
        edema=1,
        enhancing=3,
    ),
}


def get_label_convention(convention: str | LabelConvention) -> LabelConvention:
    """Look up a label convention by name.

    Args:
        convention: a key of :data:`LABEL_CONVENTIONS`, or a :class:`LabelConvention` (returned as is).

    Returns:
        The convention.

    Raises:
        ValueError: if the name is unknown.
    """
    if isinstance(convention, LabelConvention):
        return convention
    try:
        return LABEL_CONVENTIONS[convention]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown label convention {convention!r}; expected one of {sorted(LABEL_CONVENTIONS)}"
        ) from None


def _drop_channel(labels: NdarrayOrTensor) -> NdarrayOrTensor:
    if labels.ndim == 4:
        if labels.shape[0] != 1:
            raise ValueError(
                f"labels must be (1, X, Y, Z) or (X, Y, Z), got shape {tuple(labels.shape)} (more than one channel)"
            )
        return labels[0]
    if labels.ndim != 3:
        raise ValueError(f"labels must be (1, X, Y, Z) or (X, Y, Z), got shape {tuple(labels.shape)}")
    return labels


def _isin(array: _ArrayT, values: Sequence[int]) -> _ArrayT:
    # Equality, not np.isin / torch.isin: labels often arrive as float after loading or resampling.
    mask = array == values[0]
    for value in values[1:]:
        mask = mask | (array == value)
    return mask


def labels_to_regions(labels: NdarrayOrTensor, convention: str | LabelConvention) -> NdarrayOrTensor:
    """Convert an integer label map into the TC/WT/ET region masks.

    Args:
        labels: label map, ``(X, Y, Z)`` or ``(1, X, Y, Z)`` (the channel is replaced), numpy or torch.
        convention: the label convention (see :data:`LABEL_CONVENTIONS`).

    Returns:
        The masks, ``(3, X, Y, Z)`` in :data:`REGIONS` order, ``float32`` (losses such as ``DiceLoss``
        with ``squared_pred`` need float), of the input's type; a ``MetaTensor`` keeps its metadata.

    Raises:
        ValueError: if the convention is unknown or the shape is not a single-channel 3-D volume.
    """
    conv = get_label_convention(convention)
    data = labels.as_tensor() if isinstance(labels, MetaTensor) else labels
    data = _drop_channel(data)
    if isinstance(data, torch.Tensor):
        masks = [_isin(data, conv.region_labels[region]) for region in REGIONS]
        out: NdarrayOrTensor = torch.stack(masks, dim=0).to(torch.float32)
        return convert_to_dst_type(out, dst=labels, dtype=torch.float32)[0]
    return np.stack([_isin(data, conv.region_labels[region]) for region in REGIONS], axis=0).astype(np.float32)


def regions_to_labels(regions: NdarrayOrTensor, convention: str | LabelConvention) -> NdarrayOrTensor:
    """Convert TC/WT/ET region masks back into an integer label map.

    Regions are hierarchical: a voxel in ET is labelled enhancing whatever TC and WT say; a voxel in TC
    but not ET is the core label; a voxel in WT but not TC is edema.

    Args:
        regions: ``(3, X, Y, Z)`` masks in :data:`REGIONS` order, bool or already thresholded numbers
            (values above 0.5 count as inside), numpy or torch.
        convention: the label convention of the output.

    Returns:
        ``(1, X, Y, Z)`` ``uint8`` labels, of the input's type; a ``MetaTensor`` keeps its metadata.

    Raises:
        ValueError: if the convention is unknown or ``regions`` does not have three channels.
    """
    conv = get_label_convention(convention)
    data = regions.as_tensor() if isinstance(regions, MetaTensor) else regions
    if data.ndim < 2 or data.shape[0] != len(REGIONS):
        raise ValueError(f"regions must have {len(REGIONS)} channels {REGIONS} first, got shape {tuple(data.shape)}")
    inside: NdarrayOrTensor
    if isinstance(data, torch.Tensor):
        inside = data.to(torch.float32) > 0.5
        out: NdarrayOrTensor = torch.zeros(data.shape[1:], dtype=torch.uint8, device=data.device)
    else:
        inside = np.asarray(data).astype(np.float32) > 0.5
        out = np.zeros(data.shape[1:], dtype=np.uint8)
    tc, wt, et = (inside[REGIONS.index(name)] for name in ("tc", "wt", "et"))
    # Later assignments win, which makes the hierarchy ET > TC > WT.
    out[wt] = conv.edema
    out[tc] = conv.core
    out[et] = conv.enhancing
    out = out[None]
    if isinstance(out, torch.Tensor):
        return convert_to_dst_type(out, dst=regions, dtype=torch.uint8)[0]
    return out


def label_values(array: NdarrayOrTensor) -> list[float]:
    """The distinct values of a label map, sorted.

    Args:
        array: the label map (any shape), numpy or torch.

    Returns:
        The values, as Python numbers.
    """
    if isinstance(array, torch.Tensor):
        return torch.unique(array.detach()).cpu().tolist()
    return np.unique(np.asarray(array)).tolist()


def matching_conventions(values: Sequence[float]) -> list[str]:
    """The label conventions whose valid values include every one of ``values``.

    Args:
        values: label values found in a file (see :func:`label_values`).

    Returns:
        Names of :data:`LABEL_CONVENTIONS`, in its order; empty if no convention fits.
    """
    return [name for name, conv in LABEL_CONVENTIONS.items() if all(v in conv.values for v in values)]


def _show(values: Sequence[float], limit: int = 10) -> str:
    # An image passed as labels has millions of values: show a few.
    shown = [str(int(v)) if float(v).is_integer() else str(v) for v in values[:limit]]
    return "[" + ", ".join(shown) + (f", ... ({len(values)} values)" if len(values) > limit else "") + "]"


def check_labels(array: NdarrayOrTensor, convention: str | LabelConvention, source: str) -> None:
    """Check that a label map holds only the values of a convention.

    Args:
        array: the label map (any shape), numpy or torch.
        convention: the label convention it should follow.
        source: where the labels come from (typically the file path), named in the error.

    Raises:
        ValueError: naming ``source``, the unexpected values and the conventions the values do fit, if any
            value is not one of the convention's.
    """
    conv = get_label_convention(convention)
    # A few comparisons instead of sorting every voxel: the values themselves are needed only for the message.
    if isinstance(array, torch.Tensor):
        all_valid = bool(_isin(array.detach(), conv.values).all())
    else:
        all_valid = bool(_isin(np.asarray(array), conv.values).all())
    if all_valid:
        return
    found = label_values(array)
    unexpected = [v for v in found if v not in conv.values]
    if unexpected:
        fits = matching_conventions(found)
        fit = f"label convention {' or '.join(map(repr, fits))}" if fits else "no known label convention"
        raise ValueError(
            f"{source}: unexpected label values {_show(unexpected)} for label convention {conv.name!r} "
            f"(valid values: {list(conv.values)}); its values {_show(found)} fit {fit}"
        )


class ConvertToRegions(Transform):
    """Array transform: integer labels to float TC/WT/ET masks, see :func:`labels_to_regions`.

    Args:
        convention: the label convention of the input.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, convention: str | LabelConvention) -> None:
        self.convention = get_label_convention(convention)

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        return labels_to_regions(img, self.convention)


class ConvertToLabels(Transform):
    """Array transform: TC/WT/ET masks to integer labels, see :func:`regions_to_labels`.

    Args:
        convention: the label convention of the output.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, convention: str | LabelConvention) -> None:
        self.convention = get_label_convention(convention)

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        return regions_to_labels(img, self.convention)


class ConvertToRegionsd(MapTransform):
    """Dictionary transform: integer labels to float TC/WT/ET masks, see :func:`labels_to_regions`.

    Args:
        keys: keys of the label maps to convert.
        convention: the label convention of the input.
        allow_missing_keys: do not raise if a key is missing.
    """

    backend = ConvertToRegions.backend

    def __init__(
        self, keys: KeysCollection, convention: str | LabelConvention, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.converter = ConvertToRegions(convention)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.converter(d[key])
        return d


class ConvertToLabelsd(MapTransform):
    """Dictionary transform: TC/WT/ET masks to integer labels, see :func:`regions_to_labels`.

    Args:
        keys: keys of the region masks to convert.
        convention: the label convention of the output.
        allow_missing_keys: do not raise if a key is missing.
    """

    backend = ConvertToLabels.backend

    def __init__(
        self, keys: KeysCollection, convention: str | LabelConvention, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.converter = ConvertToLabels(convention)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.converter(d[key])
        return d
