"""Exponent fitting for sample-complexity checks: thresholds, log-log slopes, seed bootstrap.

The protocol: for each horizon (or dimension) ``x``, the experiment
evaluates the success indicator of every seed at several sample sizes ``M``; the threshold
``N*(x)`` is the smallest evaluated sample count whose success rate, and that of every larger
evaluated count, reaches the level (0.9). The exponent is the least-squares slope of
``log N*`` on ``log x``; its confidence interval comes from resampling seeds (a seed bootstrap:
each replicate redraws the seeds of every ``x`` with replacement, recomputes each threshold
from the stored indicators and refits the slope). Deterministic for a given ``numpy`` seed.
"""

from __future__ import annotations

import dataclasses

import numpy as np


def loglog_slope(x, y) -> tuple[float, float]:
    """Least-squares fit ``log y = slope log x + intercept``; returns ``(slope, intercept)``."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or x.size < 2:
        raise ValueError(f"need two 1-D arrays of equal length >= 2, got {x.shape} and {y.shape}")
    if np.any(x <= 0) or np.any(y <= 0) or not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("log-log fits need finite, positive x and y")
    lx, ly = np.log(x), np.log(y)
    slope, intercept = np.polyfit(lx, ly, 1)
    return float(slope), float(intercept)


def local_slopes(x, y) -> np.ndarray:
    """Slopes between consecutive points on log-log axes (``len(x) - 1`` values)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return np.diff(np.log(y)) / np.diff(np.log(x))


def threshold_index(success_rates, level: float) -> int | None:
    """Index (into evaluations sorted by sample size) of the threshold, or None.

    The smallest index ``i`` with ``rate[j] >= level`` for every ``j >= i``: a rate that dips
    below the level at a larger sample size (noise) moves the threshold up, never down.
    """
    rates = np.asarray(success_rates, np.float64)
    ok = rates >= level
    if not ok[-1]:
        return None
    failing = np.flatnonzero(~ok)
    return 0 if failing.size == 0 else int(failing[-1]) + 1


def threshold(samples, success, level: float) -> float:
    """``N*``: the threshold sample count from indicators ``success[n_evals, seeds]``.

    ``samples[n_evals]`` are the (mean) sample counts of the evaluations, in any order; NaN
    when even the largest fails the level.
    """
    samples = np.asarray(samples, np.float64)
    success = np.asarray(success, bool)
    if success.ndim != 2 or success.shape[0] != samples.shape[0]:
        raise ValueError(f"success must be [n_evals, seeds] matching samples, got {success.shape}")
    order = np.argsort(samples, kind="stable")
    index = threshold_index(success[order].mean(axis=1), level)
    return float("nan") if index is None else float(samples[order][index])


def bootstrap_thresholds(samples, success, level: float, num_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``num_boot`` thresholds, each from a resample (with replacement) of the seeds.

    The same seed indices are used for every evaluation of one replicate (the evaluations
    share their seeds: common random numbers). Replicates whose largest evaluation fails are
    set to that largest sample count (right-censored; reported as such by callers).
    """
    samples = np.asarray(samples, np.float64)
    success = np.asarray(success, bool)
    order = np.argsort(samples, kind="stable")
    samples, success = samples[order], success[order]
    n_seeds = success.shape[1]
    out = np.empty(num_boot)
    for b in range(num_boot):
        idx = rng.integers(0, n_seeds, n_seeds)
        index = threshold_index(success[:, idx].mean(axis=1), level)
        out[b] = samples[-1] if index is None else samples[index]
    return out


@dataclasses.dataclass(frozen=True)
class SlopeFit:
    """A log-log slope with a bootstrap percentile interval."""

    slope: float
    intercept: float
    ci_low: float
    ci_high: float
    local: tuple[float, ...]
    num_boot: int

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def slope_with_ci(x, y, y_boot, confidence: float = 0.95) -> SlopeFit:
    """Slope of ``log y`` on ``log x`` and its percentile interval from replicates.

    Args:
      x, y: ``[n]`` point estimates.
      y_boot: ``[n, B]`` bootstrap replicates of ``y`` (independent across ``x``).
      confidence: two-sided level of the interval.
    """
    x = np.asarray(x, np.float64)
    y_boot = np.asarray(y_boot, np.float64)
    slope, intercept = loglog_slope(x, y)
    if y_boot.ndim != 2 or y_boot.shape[0] != x.size:
        raise ValueError(f"y_boot must be [len(x), B], got {y_boot.shape}")
    lx = np.log(x)
    centred = lx - lx.mean()
    ly = np.log(y_boot)
    slopes = centred @ (ly - ly.mean(axis=0)) / (centred @ centred)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(slopes, [alpha, 1.0 - alpha])
    return SlopeFit(slope, intercept, float(low), float(high), tuple(float(s) for s in local_slopes(x, y)), y_boot.shape[1])


@dataclasses.dataclass(frozen=True)
class LowerOrderFit:
    """``y = a x^p + b x^(p - 1)``: a leading power law with its first lower-order term.

    ``exponent`` is ``p`` (the leading exponent), ``correction`` is ``c = b / a`` (so
    ``y = a x^(p - 1) (x + c)``: the lower-order term matters while ``x`` is not large against
    ``|c|``), with percentile intervals over the replicates.
    """

    exponent: float
    amplitude: float
    correction: float
    ci_low: float
    ci_high: float
    correction_ci: tuple[float, float]
    num_boot: int

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _lower_order_losses(p: np.ndarray, x: np.ndarray, y: np.ndarray):
    """For each exponent ``p[P]`` and each column of ``y[n, B]``: ``(a, b, loss)``, each ``[P, B]``.

    ``(a, b)`` solve the (linear) relative least squares ``sum_i ((a x_i^p + b x_i^(p-1)) / y_i - 1)^2``
    in closed form; ``loss`` is the log-space residual ``sum_i log(fitted_i / y_i)^2`` (inf where a
    fitted value is not positive).
    """
    powers = x[None, :] ** p[:, None]  # [P, n]
    u = powers[:, :, None] / y[None]  # [P, n, B]
    v = u / x[None, :, None]
    uu, uv, vv = (u * u).sum(1), (u * v).sum(1), (v * v).sum(1)
    u1, v1 = u.sum(1), v.sum(1)
    det = uu * vv - uv * uv
    with np.errstate(divide="ignore", invalid="ignore"):
        a = (vv * u1 - uv * v1) / det
        b = (uu * v1 - uv * u1) / det
        fitted = (a[:, None] * u + b[:, None] * v) * y[None]  # [P, n, B]
        loss = np.where(np.all(fitted > 0, axis=1), np.sum(np.log(np.abs(fitted) / y[None]) ** 2, axis=1), np.inf)
    loss = np.where(np.isfinite(loss), loss, np.inf)
    return a, b, loss


def _lower_order_many(x: np.ndarray, y: np.ndarray, exponent_range) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(p, a, b)`` ``[B]`` for the columns of ``y[n, B]``: a grid of step 0.01, then 0.0005 around its best."""
    coarse = np.arange(exponent_range[0], exponent_range[1] + 1e-9, 0.01)
    _, _, loss = _lower_order_losses(coarse, x, y)
    best = coarse[np.argmin(loss, axis=0)]  # [B]
    offsets = np.arange(-0.01, 0.01 + 1e-12, 0.0005)
    p_out, a_out, b_out = (np.empty(y.shape[1]) for _ in range(3))
    for j in range(y.shape[1]):
        fine = np.clip(best[j] + offsets, *exponent_range)
        a, b, loss = _lower_order_losses(fine, x, y[:, j : j + 1])
        i = int(np.argmin(loss[:, 0]))
        p_out[j], a_out[j], b_out[j] = fine[i], a[i, 0], b[i, 0]
    return p_out, a_out, b_out


def lower_order_fit(x, y, y_boot, confidence: float = 0.95, exponent_range=(0.0, 8.0)) -> LowerOrderFit:
    """Fit ``y = a x^p + b x^(p - 1)`` (log-space least squares) and bootstrap ``p``.

    The leading exponent ``p`` of a quantity whose next term is one power lower (for ``N*(H)``:
    the ``ceil`` allocation's up to one call per point and iteration, a cost ``~ K`` per point
    next to the ``~ K M`` of the leading term). Three parameters: needs at least four points.

    Args:
      x, y: ``[n]`` positive point estimates, ``n >= 4``.
      y_boot: ``[n, B]`` replicates of ``y`` (each refitted).
      exponent_range: the interval searched for ``p``.
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    y_boot = np.asarray(y_boot, np.float64)
    if x.shape != y.shape or x.ndim != 1 or x.size < 4:
        raise ValueError(f"a lower-order fit has three parameters and needs x, y of equal length >= 4, got {x.shape}, {y.shape}")
    if y_boot.ndim != 2 or y_boot.shape[0] != x.size:
        raise ValueError(f"y_boot must be [len(x), B], got {y_boot.shape}")
    if np.any(x <= 0) or np.any(y <= 0) or np.any(y_boot <= 0):
        raise ValueError("lower-order fits need positive x, y and replicates")
    (p,), (a,), (b,) = _lower_order_many(x, y[:, None], exponent_range)
    boot_p, boot_a, boot_b = _lower_order_many(x, y_boot, exponent_range)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(boot_p, [alpha, 1.0 - alpha])
    corrections = boot_b / boot_a
    c_low, c_high = np.quantile(corrections, [alpha, 1.0 - alpha])
    correction_ci = (float(c_low), float(c_high))
    return LowerOrderFit(float(p), float(a), float(b / a), float(low), float(high), correction_ci, y_boot.shape[1])
