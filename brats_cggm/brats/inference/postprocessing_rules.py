"""The post-processing thresholds of a model, as its inference config holds them (``postprocessing_rules``).

A run's ``configs/inference.json`` (and the bundle's ``inference.yaml``) may hold an entry

.. code-block:: json

    "postprocessing_rules": {"min_component_size": {"et": 50.0}, "min_enhancing_size": 100.0, "unit": "mm3"}

with the thresholds of :func:`brats_cggm.brats.inference.postprocessing.postprocess_labels`: the least size of a kept
connected component per region (``wt``, ``tc``, ``et``; regions left out are not changed), the least total
enhancing-tumour size kept as enhancing (null: that rule is off), and the unit of both (``voxels`` or ``mm3``).
``brats-cggm-fit-postprocessing`` writes it; ``brats-cggm-infer --postprocess`` and the bundle's
``postprocess: true`` apply it. The entry is not named ``postprocessing``: that key of a bundle config is the
MONAI transform that turns network outputs into files, which a run config merged over ``inference.yaml`` would
replace.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from brats_cggm.brats.inference.postprocessing import POSTPROCESS_REGIONS, postprocess_labels

__all__ = ["RULES_KEY", "PostprocessingRules"]

#: The key of the thresholds in an inference config.
RULES_KEY = "postprocessing_rules"

_UNITS = ("voxels", "mm3")
_FIELDS = ("min_component_size", "min_enhancing_size", "unit")


def _size(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{where} must be a finite number >= 0, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class PostprocessingRules:
    """Thresholds of the two post-processing rules (see :mod:`brats_cggm.brats.inference.postprocessing`).

    Attributes:
        min_component_size: region (``wt``, ``tc``, ``et``) to the least size of its kept components.
        min_enhancing_size: least total enhancing-tumour size kept as enhancing; None: off.
        unit: ``"voxels"`` or ``"mm3"``.
    """

    min_component_size: Mapping[str, float] = field(default_factory=dict)
    min_enhancing_size: float | None = None
    unit: str = "mm3"

    @classmethod
    def from_config(cls, value: Any, source: str) -> PostprocessingRules:
        """Read and check a ``postprocessing_rules`` entry.

        Args:
            value: the entry (a mapping of plain values).
            source: the config it comes from, for the errors.

        Returns:
            The rules.

        Raises:
            ValueError: naming ``source`` and the setting at fault.
        """
        where = f"{source}: {RULES_KEY}"
        if not isinstance(value, Mapping):
            raise ValueError(f"{where} must be a mapping with keys {list(_FIELDS)}, got {value!r}")
        unknown = sorted(set(map(str, value)) - set(_FIELDS))
        if unknown:
            raise ValueError(f"{where}: unknown keys {unknown}; expected some of {list(_FIELDS)}")
        sizes = value.get("min_component_size") or {}
        if not isinstance(sizes, Mapping):
            raise ValueError(f"{where}#min_component_size must map regions to sizes, got {sizes!r}")
        regions = sorted(set(map(str, sizes)) - set(POSTPROCESS_REGIONS))
        if regions:
            raise ValueError(f"{where}#min_component_size: unknown regions {regions}; expected {POSTPROCESS_REGIONS}")
        unit = value.get("unit", "mm3")
        if unit not in _UNITS:
            raise ValueError(f"{where}#unit must be one of {list(_UNITS)}, got {unit!r}")
        enhancing = value.get("min_enhancing_size")
        return cls(
            min_component_size={
                str(r): _size(v, f"{where}#min_component_size#{r}") for r, v in sizes.items() if v is not None
            },
            min_enhancing_size=None if enhancing is None else _size(enhancing, f"{where}#min_enhancing_size"),
            unit=unit,
        )

    def to_config(self) -> dict[str, Any]:
        """The entry as plain JSON values (the inverse of :meth:`from_config`)."""
        return {
            "min_component_size": {
                r: self.min_component_size[r] for r in POSTPROCESS_REGIONS if r in self.min_component_size
            },
            "min_enhancing_size": self.min_enhancing_size,
            "unit": self.unit,
        }

    @property
    def active(self) -> bool:
        """Whether any rule changes labels."""
        return any(v > 0 for v in self.min_component_size.values()) or bool(self.min_enhancing_size)

    def apply(self, labels: np.ndarray, convention: str, spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> np.ndarray:
        """The label map post-processed (see :func:`~brats_cggm.brats.inference.postprocessing.postprocess_labels`).

        Args:
            labels: integer label map ``(X, Y, Z)``.
            convention: its label convention.
            spacing: voxel size (mm), for ``unit="mm3"``.

        Returns:
            A new label map of the same dtype.
        """
        return postprocess_labels(
            labels, convention, self.min_component_size, self.min_enhancing_size, self.unit, spacing
        )
