"""The regions the BraTS challenge evaluates, as integer label sets of each label convention.

The official evaluator (``brats-evaluation``, its ``gli`` configuration ``configs/config_gli.yaml``) reads labels
of the 2023 convention and scores six regions: ``netc`` (label 1), ``snfh`` (2), ``et`` (3), ``rc`` (4, resection
cavity, BraTS 2024 post-treatment glioma), ``tc`` (1 or 3) and ``wt`` (1, 2 or 3; the resection cavity is not
tumour). The same regions in the other conventions of :data:`~brats_cggm.brats.data.labels.LABEL_CONVENTIONS`:

============  ===========  ===========  ===========
region        brats2021    brats2023    msd
============  ===========  ===========  ===========
``et``        4            3            3
``tc``        1, 4         1, 3         2, 3
``wt``        1, 2, 4      1, 2, 3      1, 2, 3
``netc``      1            1            2
``snfh``      2            2            1
``rc``        (none)       4            (none)
============  ===========  ===========  ===========

``et``, ``tc`` and ``wt`` equal the channels of :func:`~brats_cggm.brats.data.labels.labels_to_regions`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from brats_cggm.brats.data.labels import LabelConvention, get_label_convention

__all__ = ["CHALLENGE_REGIONS", "RESECTION_CAVITY_LABEL", "challenge_region_labels", "challenge_region_masks"]

#: Regions in the column order of the official evaluator's ``gli`` configuration.
CHALLENGE_REGIONS: tuple[str, ...] = ("et", "tc", "wt", "netc", "snfh", "rc")

#: Label of the resection cavity in the BraTS 2024 post-treatment glioma data (2023 label convention).
RESECTION_CAVITY_LABEL = 4


def challenge_region_labels(convention: str | LabelConvention) -> dict[str, tuple[int, ...]]:
    """The labels that make up each challenge region in a label convention.

    Args:
        convention: a key of :data:`~brats_cggm.brats.data.labels.LABEL_CONVENTIONS` or a convention.

    Returns:
        Region name to its labels, in :data:`CHALLENGE_REGIONS` order; ``rc`` only for ``brats2023``
        (the other conventions have no resection cavity label).

    Raises:
        ValueError: if the convention is unknown.
    """
    conv = get_label_convention(convention)
    regions = {
        "et": (conv.enhancing,),
        "tc": tuple(sorted((conv.core, conv.enhancing))),
        "wt": tuple(sorted((conv.core, conv.edema, conv.enhancing))),
        "netc": (conv.core,),
        "snfh": (conv.edema,),
    }
    if conv.name == "brats2023":
        regions["rc"] = (RESECTION_CAVITY_LABEL,)
    return regions


def challenge_region_masks(
    labels: np.ndarray, convention: str | LabelConvention, regions: tuple[str, ...] | None = None
) -> Mapping[str, np.ndarray]:
    """Boolean masks of challenge regions.

    Args:
        labels: integer label map ``(X, Y, Z)``.
        convention: its label convention.
        regions: the regions wanted (all of the convention's when None).

    Returns:
        Region name to a boolean mask of the shape of ``labels``.

    Raises:
        ValueError: if the convention is unknown or a region is not defined for it.
    """
    defined = challenge_region_labels(convention)
    wanted = tuple(defined) if regions is None else tuple(regions)
    unknown = [r for r in wanted if r not in defined]
    if unknown:
        name = get_label_convention(convention).name
        raise ValueError(f"regions {unknown} are not defined for label convention {name!r}; defined: {list(defined)}")
    labels = np.asarray(labels)
    return {region: np.isin(labels, defined[region]) for region in wanted}
