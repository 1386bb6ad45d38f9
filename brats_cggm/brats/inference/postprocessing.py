"""Post-processing of BraTS label maps: small connected components, small enhancing tumour, and choosing both.

Two rules, applied in this order by :func:`postprocess_labels`:

1. small components: each 26-connected component of a region (``wt``, then ``tc``, then ``et``) smaller than the
   region's threshold leaves that region; its voxels take the label of the next outer region (``et`` voxels
   become non-enhancing core, ``tc`` voxels edema, ``wt`` voxels background), so the regions stay nested;
2. small enhancing tumour: when the case's whole ``et`` is smaller than a threshold, every ``et`` voxel becomes
   non-enhancing core (Isensee et al., "No New-Net", BraTS 2018: a reference without enhancing tumour scores 0 for
   any false-positive voxel, and ``tc`` is unchanged by the swap).

Sizes are in voxels (``unit="voxels"``) or mm³ (``unit="mm3"``, with the voxel spacing).

:func:`choose_postprocessing` picks the thresholds on validation cases the way nnU-Net decides its post-processing
(``nnunetv2/postprocessing/remove_connected_components.py``, ``determine_postprocessing``): try each rule on top of
the rules already kept, and keep it only if it improves the mean score over the cases; here each rule is tried at
every threshold of a small grid, and the best threshold is kept if it improves the score.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends, convert_to_dst_type
from scipy import ndimage

from brats_cggm.brats.data.labels import LabelConvention, get_label_convention
from brats_cggm.brats.metrics.case_scores import dice

__all__ = [
    "POSTPROCESS_REGIONS",
    "BratsPostprocess",
    "BratsPostprocessd",
    "PostprocessingChoice",
    "choose_postprocessing",
    "mean_region_dice",
    "postprocess_labels",
    "relabel_small_enhancing_tumour",
    "remove_small_components",
    "remove_small_region_components",
]

#: Regions whose small components may be removed, outermost first (the order the rule applies them).
POSTPROCESS_REGIONS: tuple[str, ...] = ("wt", "tc", "et")

_CONNECTIVITY_26 = np.ones((3, 3, 3), dtype=bool)
_UNITS = ("voxels", "mm3")


def _voxel_size(unit: str, spacing: Sequence[float]) -> float:
    if unit not in _UNITS:
        raise ValueError(f"unit must be one of {_UNITS}, got {unit!r}")
    if unit == "voxels":
        return 1.0
    spacing = [float(s) for s in spacing]
    if not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing must be positive finite numbers, got {spacing}")
    return float(np.prod(spacing))


def remove_small_components(
    mask: np.ndarray, min_size: float, unit: str = "voxels", spacing: Sequence[float] = (1.0, 1.0, 1.0)
) -> np.ndarray:
    """A mask without its 26-connected components smaller than ``min_size``.

    Args:
        mask: boolean mask ``(X, Y, Z)``.
        min_size: least size of a kept component.
        unit: ``"voxels"`` or ``"mm3"``.
        spacing: voxel size (mm), for ``unit="mm3"``.

    Returns:
        A new boolean mask.

    Raises:
        ValueError: if ``unit`` is unknown or the spacing is not positive.
    """
    voxel = _voxel_size(unit, spacing)
    mask = np.asarray(mask, bool)
    components, n = ndimage.label(mask, structure=_CONNECTIVITY_26)
    if n == 0:
        return mask.copy()
    sizes = np.bincount(components.ravel(), minlength=n + 1) * voxel
    keep = sizes >= min_size
    keep[0] = False
    return keep[components]


def _region_masks(labels: np.ndarray, conv: LabelConvention) -> dict[str, np.ndarray]:
    return {r: np.isin(labels, v) for r, v in conv.region_labels.items()}


def remove_small_region_components(
    labels: np.ndarray,
    region: str,
    min_size: float,
    convention: str | LabelConvention,
    unit: str = "voxels",
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
) -> np.ndarray:
    """A label map whose region has no component smaller than ``min_size`` (rule 1 of the module docstring).

    Args:
        labels: integer label map ``(X, Y, Z)``.
        region: ``"wt"``, ``"tc"`` or ``"et"``.
        min_size: least size of a kept component.
        convention: the label convention of ``labels``.
        unit: ``"voxels"`` or ``"mm3"``.
        spacing: voxel size (mm), for ``unit="mm3"``.

    Returns:
        A new label map of the same dtype.

    Raises:
        ValueError: if the region, convention or unit is unknown.
    """
    conv = get_label_convention(convention)
    if region not in POSTPROCESS_REGIONS:
        raise ValueError(f"region must be one of {POSTPROCESS_REGIONS}, got {region!r}")
    labels = np.asarray(labels)
    inside = np.isin(labels, conv.region_labels[region])
    removed = inside & ~remove_small_components(inside, min_size, unit, spacing)
    outer = {"et": conv.core, "tc": conv.edema, "wt": 0}[region]
    out = labels.copy()
    out[removed] = outer
    return out


def relabel_small_enhancing_tumour(
    labels: np.ndarray,
    min_size: float,
    convention: str | LabelConvention,
    unit: str = "voxels",
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
) -> np.ndarray:
    """A label map whose enhancing tumour becomes non-enhancing core when smaller than ``min_size`` in total.

    Args:
        labels: integer label map ``(X, Y, Z)``.
        min_size: least total enhancing-tumour size kept as such.
        convention: the label convention of ``labels``.
        unit: ``"voxels"`` or ``"mm3"``.
        spacing: voxel size (mm), for ``unit="mm3"``.

    Returns:
        A new label map of the same dtype.

    Raises:
        ValueError: if the convention or unit is unknown.
    """
    conv = get_label_convention(convention)
    voxel = _voxel_size(unit, spacing)
    labels = np.asarray(labels)
    out = labels.copy()
    enhancing = labels == conv.enhancing
    if 0 < int(enhancing.sum()) * voxel < min_size:
        out[enhancing] = conv.core
    return out


def postprocess_labels(
    labels: np.ndarray,
    convention: str | LabelConvention,
    min_component_size: Mapping[str, float] | None = None,
    min_enhancing_size: float | None = None,
    unit: str = "voxels",
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
) -> np.ndarray:
    """Both rules of the module docstring: small components per region, then small enhancing tumour.

    Args:
        labels: integer label map ``(X, Y, Z)``.
        convention: its label convention.
        min_component_size: region (``wt``, ``tc``, ``et``) to the least size of its kept components; regions
            left out are not changed.
        min_enhancing_size: least total enhancing-tumour size (None: rule 2 off).
        unit: ``"voxels"`` or ``"mm3"``.
        spacing: voxel size (mm), for ``unit="mm3"``.

    Returns:
        A new label map of the same dtype.

    Raises:
        ValueError: if a region, the convention or the unit is unknown.
    """
    sizes = dict(min_component_size or {})
    unknown = sorted(set(sizes) - set(POSTPROCESS_REGIONS))
    if unknown:
        raise ValueError(f"min_component_size: unknown regions {unknown}; expected some of {POSTPROCESS_REGIONS}")
    out = np.asarray(labels).copy()
    for region in POSTPROCESS_REGIONS:
        if sizes.get(region):
            out = remove_small_region_components(out, region, sizes[region], convention, unit, spacing)
    if min_enhancing_size:
        out = relabel_small_enhancing_tumour(out, min_enhancing_size, convention, unit, spacing)
    return out


class BratsPostprocess(Transform):
    """Array transform: :func:`postprocess_labels` on a label map ``(1, X, Y, Z)`` or ``(X, Y, Z)``.

    With ``unit="mm3"`` the spacing is read from a ``MetaTensor``'s ``pixdim`` (else ``spacing`` is used).

    Args:
        convention: the label convention of the label maps.
        min_component_size: region to the least size of its kept components.
        min_enhancing_size: least total enhancing-tumour size (None: off).
        unit: ``"voxels"`` or ``"mm3"``.
        spacing: voxel size (mm) when the input carries none.

    Raises:
        ValueError: if the convention, a region or the unit is unknown.
    """

    backend = [TransformBackends.NUMPY]

    def __init__(
        self,
        convention: str | LabelConvention,
        min_component_size: Mapping[str, float] | None = None,
        min_enhancing_size: float | None = None,
        unit: str = "voxels",
        spacing: Sequence[float] = (1.0, 1.0, 1.0),
    ) -> None:
        self.convention = get_label_convention(convention)
        self.min_component_size = dict(min_component_size or {})
        self.min_enhancing_size = min_enhancing_size
        self.unit = unit
        self.spacing = tuple(float(s) for s in spacing)
        # fail at construction (when a config is parsed), not on the first case
        postprocess_labels(np.zeros((1, 1, 1), np.uint8), convention, self.min_component_size, None, unit, spacing)

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        spacing = self.spacing
        if isinstance(img, MetaTensor) and self.unit == "mm3":
            spacing = tuple(float(s) for s in img.pixdim[:3])
        data = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
        if data.ndim == 4 and data.shape[0] == 1:
            out = postprocess_labels(
                data[0], self.convention, self.min_component_size, self.min_enhancing_size, self.unit, spacing
            )[None]
        elif data.ndim == 3:
            out = postprocess_labels(
                data, self.convention, self.min_component_size, self.min_enhancing_size, self.unit, spacing
            )
        else:
            raise ValueError(f"labels must be (1, X, Y, Z) or (X, Y, Z), got shape {tuple(data.shape)}")
        return convert_to_dst_type(out, dst=img)[0]


class BratsPostprocessd(MapTransform):
    """Dictionary transform: :class:`BratsPostprocess` on the label maps under ``keys``.

    Args:
        keys: keys of the label maps.
        convention: their label convention.
        min_component_size: region to the least size of its kept components.
        min_enhancing_size: least total enhancing-tumour size (None: off).
        unit: ``"voxels"`` or ``"mm3"``.
        spacing: voxel size (mm) when the input carries none.
        allow_missing_keys: do not raise if a key is missing.
    """

    backend = BratsPostprocess.backend

    def __init__(
        self,
        keys: KeysCollection,
        convention: str | LabelConvention,
        min_component_size: Mapping[str, float] | None = None,
        min_enhancing_size: float | None = None,
        unit: str = "voxels",
        spacing: Sequence[float] = (1.0, 1.0, 1.0),
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.postprocess = BratsPostprocess(convention, min_component_size, min_enhancing_size, unit, spacing)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.postprocess(d[key])
        return d


def mean_region_dice(
    pred: np.ndarray,
    ref: np.ndarray,
    convention: str | LabelConvention,
    ref_convention: str | LabelConvention | None = None,
) -> float:
    """Mean Dice of ET, TC and WT of one case (a region empty on both sides scores 1).

    Args:
        pred: predicted label map.
        ref: reference label map.
        convention: label convention of the prediction.
        ref_convention: label convention of the reference (``convention`` when None).

    Returns:
        The mean Dice.
    """
    p = _region_masks(np.asarray(pred), get_label_convention(convention))
    r = _region_masks(np.asarray(ref), get_label_convention(ref_convention or convention))
    return float(np.mean([dice(p[region], r[region]) for region in POSTPROCESS_REGIONS]))


@dataclass
class PostprocessingChoice:
    """Thresholds chosen by :func:`choose_postprocessing` and how each tried rule scored.

    Attributes:
        min_component_size: region to the chosen least component size (regions without a kept rule left out).
        min_enhancing_size: chosen least enhancing-tumour size, or None.
        unit: the unit of the sizes.
        table: one row per tried rule and threshold: ``rule``, ``threshold``, ``score_before``, ``score_after``,
            ``kept``.
    """

    min_component_size: dict[str, float] = field(default_factory=dict)
    min_enhancing_size: float | None = None
    unit: str = "voxels"
    table: list[dict[str, Any]] = field(default_factory=list)


def choose_postprocessing(
    cases: Sequence[tuple[np.ndarray, np.ndarray, Sequence[float]]],
    convention: str | LabelConvention,
    ref_convention: str | LabelConvention | None = None,
    component_sizes: Mapping[str, Sequence[float]] | None = None,
    enhancing_sizes: Sequence[float] = (),
    unit: str = "voxels",
    score: Callable[[np.ndarray, np.ndarray], float] | None = None,
) -> PostprocessingChoice:
    """Choose post-processing thresholds on validation cases (nnU-Net's rule, see the module docstring).

    The rules are tried in the order they apply: components of ``wt``, ``tc``, ``et``, then enhancing tumour.
    Each is tried at every threshold of its grid on top of the rules kept so far; the threshold of the best mean
    score is kept if that mean is strictly above the current one.

    Args:
        cases: ``(prediction labels, reference labels, spacing)`` of each validation case.
        convention: label convention of the predictions.
        ref_convention: label convention of the references (``convention`` when None).
        component_sizes: region to the thresholds to try for its components.
        enhancing_sizes: thresholds to try for the total enhancing tumour.
        unit: ``"voxels"`` or ``"mm3"``.
        score: ``score(prediction, reference)`` of one case, higher is better; default: the mean Dice of ET, TC
            and WT (:func:`mean_region_dice`).

    Returns:
        The choice, with the table of every tried rule and threshold.

    Raises:
        ValueError: if there is no case, or a region, the convention or the unit is unknown.
    """
    if not cases:
        raise ValueError("choose_postprocessing needs at least one validation case")
    if score is None:

        def score(p: np.ndarray, r: np.ndarray) -> float:
            return mean_region_dice(p, r, convention, ref_convention)

    grids = dict(component_sizes or {})
    unknown = sorted(set(grids) - set(POSTPROCESS_REGIONS))
    if unknown:
        raise ValueError(f"component_sizes: unknown regions {unknown}; expected some of {POSTPROCESS_REGIONS}")

    def mean_score(sizes: Mapping[str, float], enhancing: float | None) -> float:
        values = [
            score(postprocess_labels(p, convention, sizes, enhancing, unit, spacing), r) for p, r, spacing in cases
        ]
        return float(np.mean(values))

    choice = PostprocessingChoice(unit=unit)
    current = mean_score({}, None)
    trials: list[tuple[str, str | None, Sequence[float]]] = [
        (f"min_component_size[{r}]", r, grids[r]) for r in POSTPROCESS_REGIONS if r in grids
    ]
    if enhancing_sizes:
        trials.append(("min_enhancing_size", None, enhancing_sizes))
    for rule, region, grid in trials:
        rows: list[dict[str, Any]] = []
        for threshold in grid:
            sizes = dict(choice.min_component_size)
            enhancing = choice.min_enhancing_size
            if region is None:
                enhancing = float(threshold)
            else:
                sizes[region] = float(threshold)
            after = mean_score(sizes, enhancing)
            rows.append({"rule": rule, "threshold": float(threshold), "score_before": current, "score_after": after})
        best = max(rows, key=lambda row: row["score_after"]) if rows else None
        for row in rows:
            row["kept"] = best is row and row["score_after"] > current
        if best is not None and best["kept"]:
            if region is None:
                choice.min_enhancing_size = best["threshold"]
            else:
                choice.min_component_size[region] = best["threshold"]
            current = best["score_after"]
        choice.table.extend(rows)
    return choice
