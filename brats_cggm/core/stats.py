"""Statistics over runs (seeds): mean ± std, and the paired tests of a method against a baseline.

The standard deviation is the sample one (``ddof=1``); a single value has no spread to estimate, so its
``std`` is None (never 0, which would read as "no spread", nor NaN, which JSON cannot hold), and
:func:`format_mean_std` prints it without ``± std``.

Paired comparisons (one difference per seed both runs share, :func:`paired_differences`):

- :func:`paired_t_test`: the mean difference d̄, its ``confidence`` interval d̄ ± t_{1−α/2, n−1} · s/√n and the
  two-sided p-value of H0: μ_d = 0 with t = d̄ / (s/√n), n − 1 degrees of freedom (Student 1908; the paired
  t-test is the one-sample test of the differences).
- :func:`tost_paired`: Schuirmann's (1987) two one-sided tests of equivalence within ``±margin``:
  t_lower = (d̄ + margin)/(s/√n) tests H0: μ_d ≤ −margin, t_upper = (d̄ − margin)/(s/√n) tests H0: μ_d ≥ margin;
  p_TOST = max(p_lower, p_upper), and the difference is shown equivalent at level α when p_TOST < α (the same as
  the 1 − 2α interval lying inside ±margin).
- :func:`holm_adjust`: Holm's (1979) step-down adjustment across a family of m tests: with the p-values sorted,
  p̃_(i) = max_{j ≤ i} min(1, (m − j + 1) · p_(j)); a hypothesis is rejected at family-wise level α when
  p̃ < α (the family-wise error rate is at most α under any dependence between the tests).

A test needs n ≥ 2 differences and a non-zero sample standard deviation; otherwise it is not run, its p-value is
None and ``note`` says why (never a p-value of 0 or 1 that would read as a result).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "EQUIVALENT",
    "NOT_SHOWN_EQUIVALENT",
    "format_mean_std",
    "holm_adjust",
    "mean_std",
    "paired_comparison",
    "paired_differences",
    "paired_t_test",
    "tost_paired",
]

#: :func:`tost_paired`'s verdicts.
EQUIVALENT = "equivalent"
NOT_SHOWN_EQUIVALENT = "not shown equivalent"


def mean_std(values: Iterable[float]) -> dict[str, Any]:
    """The mean, sample standard deviation and count of ``values``.

    Args:
        values: one number per run.

    Returns:
        ``{"mean": float, "std": float | None, "n": int}``; ``std`` is None for a single value.

    Raises:
        ValueError: no value.
    """
    numbers = [float(v) for v in values]
    if not numbers:
        raise ValueError("mean_std needs at least one value")
    std = statistics.stdev(numbers) if len(numbers) > 1 else None
    return {"mean": statistics.fmean(numbers), "std": std, "n": len(numbers)}


def format_mean_std(stats: Mapping[str, Any], signed: bool = False, digits: int = 3) -> str:
    """``"mean ± std"`` of a :func:`mean_std` result, or ``"mean"`` alone when it has no spread (one value).

    Args:
        stats: a :func:`mean_std` result (``mean`` and ``std``).
        signed: print the mean with its sign (``+0.120``).
        digits: decimals of both numbers.

    Returns:
        The text.
    """
    mean = f"{stats['mean']:{'+' if signed else ''}.{digits}f}"
    return mean if stats.get("std") is None else f"{mean} ± {stats['std']:.{digits}f}"


def paired_differences(values: Mapping[Any, float], baseline: Mapping[Any, float]) -> dict[Any, float]:
    """``values − baseline`` for every key (seed) both have, in ``values``' order.

    Args:
        values: seed → the method's value.
        baseline: seed → the baseline's value.

    Returns:
        seed → difference; seeds only one side has are left out.
    """
    return {key: float(values[key]) - float(baseline[key]) for key in values if key in baseline}


def _no_test(differences: Sequence[float]) -> str | None:
    """Why the t statistic of ``differences`` does not exist, or None when it does."""
    if len(differences) < 2:
        return f"n = {len(differences)} < 2: no test"
    if statistics.stdev(differences) == 0.0:
        return "zero variance of the differences: no t statistic, no test"
    return None


def paired_t_test(differences: Sequence[float], confidence: float = 0.95) -> dict[str, Any]:
    """The paired t-test of H0: μ_d = 0 (two-sided) and the confidence interval of the mean difference.

    t = d̄ / (s/√n) with n − 1 degrees of freedom; the interval is d̄ ± t_{(1+confidence)/2, n−1} · s/√n.

    Args:
        differences: one paired difference per seed (:func:`paired_differences`).
        confidence: the interval's coverage, in (0, 1).

    Returns:
        ``n``, ``mean`` (None without a difference), ``std`` (sample; None below n = 2), ``t``, ``df``, ``p``,
        ``ci`` (``[low, high]``) and ``note``; ``t``, ``p`` and ``ci`` are None when there is no test (n < 2, or
        zero variance, where ``ci`` is None too: an interval of width 0 would claim certainty), and ``note`` says
        why (None otherwise).

    Raises:
        ValueError: ``confidence`` outside (0, 1).
    """
    from scipy import stats as scipy_stats

    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    d = [float(x) for x in differences]
    n = len(d)
    result: dict[str, Any] = {
        "n": n,
        "mean": statistics.fmean(d) if d else None,
        "std": statistics.stdev(d) if n > 1 else None,
        "t": None,
        "df": n - 1 if n > 1 else None,
        "p": None,
        "ci": None,
        "note": _no_test(d),
    }
    if result["note"] is not None:
        return result
    se = result["std"] / math.sqrt(n)
    t = result["mean"] / se
    half = float(scipy_stats.t.ppf((1.0 + confidence) / 2.0, n - 1)) * se
    result.update(
        t=t,
        p=float(2.0 * scipy_stats.t.sf(abs(t), n - 1)),
        ci=[result["mean"] - half, result["mean"] + half],
    )
    return result


def tost_paired(differences: Sequence[float], margin: float, alpha: float = 0.05) -> dict[str, Any]:
    """Schuirmann's two one-sided paired t-tests of equivalence: is μ_d inside ``(−margin, margin)``?

    p_lower = P(T ≥ (d̄ + margin)/(s/√n)) tests H0: μ_d ≤ −margin; p_upper = P(T ≤ (d̄ − margin)/(s/√n)) tests
    H0: μ_d ≥ margin (T: Student's t with n − 1 degrees of freedom); p = max(p_lower, p_upper).

    Args:
        differences: one paired difference per seed (:func:`paired_differences`).
        margin: the equivalence margin (> 0), fixed before the runs.
        alpha: the level of each one-sided test (and of the equivalence claim).

    Returns:
        ``margin``, ``alpha``, ``p_lower``, ``p_upper``, ``p`` (None without a test), ``verdict``
        (:data:`EQUIVALENT` when p < alpha, else :data:`NOT_SHOWN_EQUIVALENT`, also without a test) and ``note``
        (why there is no test, else None).

    Raises:
        ValueError: ``margin`` not positive or ``alpha`` outside (0, 1).
    """
    from scipy import stats as scipy_stats

    if not margin > 0.0:
        raise ValueError(f"the equivalence margin must be positive, got {margin}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    d = [float(x) for x in differences]
    result: dict[str, Any] = {
        "margin": margin,
        "alpha": alpha,
        "p_lower": None,
        "p_upper": None,
        "p": None,
        "verdict": NOT_SHOWN_EQUIVALENT,
        "note": _no_test(d),
    }
    if result["note"] is not None:
        return result
    n, mean = len(d), statistics.fmean(d)
    se = statistics.stdev(d) / math.sqrt(n)
    p_lower = float(scipy_stats.t.sf((mean + margin) / se, n - 1))
    p_upper = float(scipy_stats.t.cdf((mean - margin) / se, n - 1))
    p = max(p_lower, p_upper)
    result.update(p_lower=p_lower, p_upper=p_upper, p=p, verdict=EQUIVALENT if p < alpha else NOT_SHOWN_EQUIVALENT)
    return result


def holm_adjust(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values of a family of tests.

    With the m p-values sorted, p̃_(i) = max_{j ≤ i} min(1, (m − j + 1) · p_(j)). A test that could not be run
    (None) still counts in m, as a p-value of 1 (never rejected), so a family declared before the runs keeps
    its size; its adjusted p-value is None.

    Args:
        p_values: one per test of the family, in any order (None: not run).

    Returns:
        The adjusted p-values, in the order given.
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda i: 1.0 if p_values[i] is None else float(p_values[i]))  # type: ignore[arg-type]
    adjusted: list[float | None] = [None] * m
    running = 0.0
    for rank, i in enumerate(order):
        p = p_values[i]
        running = max(running, min(1.0, (m - rank) * (1.0 if p is None else float(p))))
        adjusted[i] = None if p is None else running
    return adjusted


def paired_comparison(
    values: Mapping[Any, float],
    baseline: Mapping[Any, float],
    margin: float,
    alpha: float = 0.05,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """A method against the baseline on one metric: the paired differences over their common seeds, the paired
    t-test with its interval (:func:`paired_t_test`) and the equivalence test (:func:`tost_paired`).

    Args:
        values: seed → the method's value.
        baseline: seed → the baseline's value.
        margin: the equivalence margin.
        alpha: the level of the equivalence test.
        confidence: the coverage of the interval of the mean difference.

    Returns:
        ``seeds`` (the common ones), ``differences``, :func:`paired_t_test`'s entries, and ``tost``
        (:func:`tost_paired`'s result).
    """
    differences = paired_differences(values, baseline)
    d = list(differences.values())
    return {
        "seeds": list(differences),
        "differences": d,
        **paired_t_test(d, confidence),
        "tost": tost_paired(d, margin, alpha),
    }
