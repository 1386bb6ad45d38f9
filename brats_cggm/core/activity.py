"""Activity statistics: how often and how strongly a balancer (or modality dropout) acted during a run.

One accumulator per balancer, fed once per decision (a step's coefficient, an epoch's window, a reset's α)
and summarised as plain numbers: TensorBoard's ``activity/...`` tags at every epoch end, ``metrics.json``'s
``"activity"`` and the comparison's ``activity/...`` columns (``docs/methods.md`` §0.3). Three kinds of key:

- a **distribution** (:meth:`ActivityStatistics.observe`): streaming count, mean, M2 (Welford), min and max,
  summarised as ``<key>/mean``, ``<key>/std`` (population), ``<key>/min`` and ``<key>/max``;
- a **fraction** (:meth:`ActivityStatistics.flag`): the share of the observations that were true, as ``<key>``;
- a **total** (:meth:`ActivityStatistics.add`): a running sum, as ``<key>``; and a **value**
  (:meth:`ActivityStatistics.record`): the last number recorded, as ``<key>``.

The state is plain numbers (:meth:`ActivityStatistics.state_dict`), so a resumed run continues the same
statistics exactly and a checkpoint loads with ``weights_only=True``.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["KINDS", "ActivityStatistics"]

#: The kinds of key: a distribution, a fraction of true flags, a running total, the last value.
KINDS = ("distribution", "fraction", "total", "value")


class ActivityStatistics:
    """Streaming statistics of a run's balancing decisions, one record per key (see the module docstring).

    A key keeps the kind it was first fed with; feeding it with another kind is an error (it would mix
    two meanings under one name).
    """

    def __init__(self) -> None:
        # key -> [kind, count, mean, M2, min, max, total]; plain Python numbers (checkpointable as they are)
        self._records: dict[str, list[Any]] = {}

    def _record(self, key: str, kind: str) -> list[Any]:
        record = self._records.get(key)
        if record is None:
            record = [kind, 0, 0.0, 0.0, math.inf, -math.inf, 0.0]
            self._records[key] = record
        elif record[0] != kind:
            raise ValueError(f"activity key {key!r} is a {record[0]}, not a {kind}")
        return record

    @staticmethod
    def _update(record: list[Any], value: float) -> None:
        # Welford's update: count, mean and the sum of squared deviations M2
        record[1] += 1
        delta = value - record[2]
        record[2] += delta / record[1]
        record[3] += delta * (value - record[2])
        record[4] = min(record[4], value)
        record[5] = max(record[5], value)
        record[6] += value

    def observe(self, key: str, value: float) -> None:
        """Add one observation of a distribution (e.g. a step's coefficient of one modality).

        Args:
            key: the statistic's name, e.g. ``cggm/B/flair``.
            value: the observation.
        """
        self._update(self._record(key, "distribution"), float(value))

    def flag(self, key: str, value: bool) -> None:
        """Add one observation of a fraction (e.g. whether a step's coefficient was clamped).

        Args:
            key: the statistic's name.
            value: whether the event happened in this observation.
        """
        self._update(self._record(key, "fraction"), float(bool(value)))

    def add(self, key: str, amount: float = 1.0) -> None:
        """Add to a running total (e.g. the number of window openings).

        Args:
            key: the statistic's name.
            amount: what to add.
        """
        self._update(self._record(key, "total"), float(amount))

    def record(self, key: str, value: float) -> None:
        """Set a value reported as it was last recorded (e.g. the α of one re-initialisation).

        Args:
            key: the statistic's name.
            value: the value.
        """
        record = self._record(key, "value")
        record[1], record[2] = 1, float(value)

    def summary(self) -> dict[str, float]:
        """The statistics as flat ``name → number`` entries, in the order the keys were first fed.

        Returns:
            ``<key>/mean``, ``<key>/std``, ``<key>/min``, ``<key>/max`` per distribution (none before its
            first observation), ``<key>`` per fraction, total and value; empty when nothing was fed.
        """
        summary: dict[str, float] = {}
        for key, (kind, count, mean, m2, low, high, total) in self._records.items():
            if kind == "distribution":
                if count:
                    summary[f"{key}/mean"] = mean
                    summary[f"{key}/std"] = math.sqrt(max(m2, 0.0) / count)
                    summary[f"{key}/min"] = low
                    summary[f"{key}/max"] = high
            elif kind == "total":
                summary[key] = total
            elif count:
                summary[key] = mean
        return summary

    def state_dict(self) -> dict[str, list[Any]]:
        """Every record as plain numbers, so that a resumed run continues the same statistics."""
        return {key: list(record) for key, record in self._records.items()}

    def load_state_dict(self, state_dict: dict[str, list[Any]] | None) -> None:
        """Restore what :meth:`state_dict` returned (None, from a checkpoint written before activity existed,
        starts empty)."""
        self._records = {str(key): list(record) for key, record in (state_dict or {}).items()}
        for key, record in self._records.items():
            if record[0] not in KINDS or len(record) != 7:
                raise ValueError(f"activity record {key!r} is not one of this version's: {record!r}")

    def __len__(self) -> int:
        return len(self._records)
