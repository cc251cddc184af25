"""Seed statistics shared by every experiment: mean, standard error and 95% intervals.

One helper per job: :func:`mean_se` (finite values only), :func:`interval` (normal or
Student-t interval of the mean) and :func:`bootstrap_interval` (percentile bootstrap of any
statistic, with its own seeded generator so a report is reproducible).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy import stats as scipy_stats


def finite(values) -> np.ndarray:
    """The finite entries of ``values`` as a float64 vector."""
    values = np.asarray(values, dtype=np.float64).ravel()
    return values[np.isfinite(values)]


def mean_se(values) -> tuple[float, float]:
    """Mean and standard error (ddof = 1) of the finite values; ``(nan, nan)`` if none, SE 0 for one."""
    values = finite(values)
    if values.size == 0:
        return math.nan, math.nan
    se = float(values.std(ddof=1) / math.sqrt(values.size)) if values.size > 1 else 0.0
    return float(values.mean()), se


def interval(values, confidence: float = 0.95, kind: str = "t") -> tuple[float, float]:
    """Interval of the mean of the finite values.

    ``kind="t"``: Student-t with ``n - 1`` degrees of freedom (the right one for a few seeds);
    ``kind="normal"``: the normal approximation ``mean +- z SE``. With fewer than two values
    both ends are the mean.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if kind not in ("t", "normal"):
        raise ValueError(f"kind must be 't' or 'normal', got {kind!r}")
    values = finite(values)
    mean, se = mean_se(values)
    if values.size < 2:
        return mean, mean
    tail = 0.5 + confidence / 2
    quantile = scipy_stats.t.ppf(tail, values.size - 1) if kind == "t" else scipy_stats.norm.ppf(tail)
    return float(mean - quantile * se), float(mean + quantile * se)


def bootstrap_interval(
    values,
    statistic: Callable[[np.ndarray], float] = np.mean,
    confidence: float = 0.95,
    num_boot: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile-bootstrap interval of ``statistic`` over the finite values (resampled with replacement)."""
    values = finite(values)
    if values.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, values.size, size=(num_boot, values.size))
    replicates = np.asarray([statistic(values[row]) for row in draws])
    low, high = np.quantile(replicates, [0.5 - confidence / 2, 0.5 + confidence / 2])
    return float(low), float(high)
