"""Exponent fitting (thresholds, slopes, seed bootstrap) and the bound table."""

from __future__ import annotations

import math

import numpy as np
import pytest

from theory import bounds, fitting


def test_loglog_slope_recovers_a_power_law():
    x = np.array([8.0, 16, 32, 64, 128])
    slope, intercept = fitting.loglog_slope(x, 3.5 * x**2.7)
    assert slope == pytest.approx(2.7, abs=1e-12)
    assert math.exp(intercept) == pytest.approx(3.5, rel=1e-10)
    np.testing.assert_allclose(fitting.local_slopes(x, x**3), 3.0)
    with pytest.raises(ValueError, match="positive"):
        fitting.loglog_slope(x, -x)


def test_threshold_ignores_order_and_moves_up_on_dips():
    samples = np.array([400.0, 100.0, 200.0, 800.0])
    rates = {100.0: 0.5, 200.0: 0.92, 400.0: 0.85, 800.0: 0.97}  # a dip at 400
    success = np.stack([np.arange(100) < 100 * rates[s] for s in samples])
    assert fitting.threshold(samples, success, 0.9) == 800.0
    rates[400.0] = 0.95
    success = np.stack([np.arange(100) < 100 * rates[s] for s in samples])
    assert fitting.threshold(samples, success, 0.9) == 200.0
    assert np.isnan(fitting.threshold(samples, np.zeros_like(success), 0.9))


def _synthetic(horizons, exponent, seeds, rng):
    """Success indicators whose true 0.9-threshold is c H^exponent, on a grid of sample sizes."""
    samples, success = [], []
    for h in horizons:
        grid = 100 * h**exponent * 2.0 ** np.linspace(-1, 1, 9)
        # P(success | N) = 1 - 0.1 (N* / N)^2 with N* = 100 h^exponent
        prob = np.clip(1 - 0.1 * (100 * h**exponent / grid) ** 2, 0, 1)
        samples.append(grid)
        success.append(rng.random((grid.size, seeds)) < prob[:, None])
    return samples, success


def test_bootstrap_interval_covers_the_true_slope_and_is_deterministic():
    horizons = np.array([8.0, 16, 32, 64])
    samples, success = _synthetic(horizons, 3.0, 400, np.random.default_rng(0))
    point = np.array([fitting.threshold(s, y, 0.9) for s, y in zip(samples, success)])

    def replicates(seed):
        return np.stack(
            [
                fitting.bootstrap_thresholds(s, y, 0.9, 300, np.random.default_rng([seed, i]))
                for i, (s, y) in enumerate(zip(samples, success))
            ]
        )

    boots = [replicates(seed) for seed in (1, 1, 2)]
    fits = [fitting.slope_with_ci(horizons, point, b) for b in boots]
    assert fits[0].ci_low <= 3.0 <= fits[0].ci_high
    assert fits[0].ci_high - fits[0].ci_low < 0.6
    assert fits[0].slope == pytest.approx(3.0, abs=0.2)
    assert fits[0] == fits[1]  # same bootstrap seed, same interval
    assert not np.array_equal(boots[0], boots[2])  # another seed, other replicates


def test_bound_table():
    assert bounds.get_bound("ls").horizon_exponent == bounds.get_bound("vwls").horizon_exponent + 1
    for name in ("tabular", "vwls", "oracle"):
        assert bounds.get_bound(name).horizon_exponent == 3
    for bound in bounds.BOUNDS.values():
        assert bound.status in ("verified", "recalled", "derived") and bound.source
    with pytest.raises(ValueError, match="no bound"):
        bounds.get_bound("dqn")
    y = bounds.reference_line([8, 16, 32], 3.0, 8, 100.0)
    np.testing.assert_allclose(y, [100, 800, 6400])
    y = bounds.reference_line([8, 64], 3.0, 8, 100.0, log_factor=True)
    assert y[1] == pytest.approx(100 * 512 * 2)  # ln 64 / ln 8 = 2
    assert bounds.num_iterations(8) == math.ceil(16 * math.log(8))
    np.testing.assert_allclose(bounds.iteration_log_factor([math.e]), [1.0])


@pytest.mark.parametrize("correction", [40.0 / 3.0, -3.0])
def test_lower_order_fit_recovers_the_leading_exponent_that_a_plain_slope_misses(correction):
    x = np.array([8.0, 16, 32, 64, 128, 256])
    y = 3.0 * x**2 * (x + correction)  # a H^3 + b H^2
    plain, _ = fitting.loglog_slope(x, y)
    assert abs(plain - 3.0) > 0.1  # the lower-order term bends the plain slope
    rng = np.random.default_rng(0)
    noisy = y[:, None] * np.exp(0.03 * rng.standard_normal((x.size, 200)))
    fit = fitting.lower_order_fit(x, y, noisy)
    assert fit.exponent == pytest.approx(3.0, abs=1e-3)
    assert fit.correction == pytest.approx(correction, rel=1e-2)
    assert fit.amplitude == pytest.approx(3.0, rel=1e-2)
    assert fit.ci_low <= 3.0 <= fit.ci_high and fit.ci_high - fit.ci_low < 1.5
    assert fit.num_boot == 200


def test_lower_order_fit_needs_four_positive_points():
    x = np.array([8.0, 16, 32])
    with pytest.raises(ValueError, match="at least|>= 4"):
        fitting.lower_order_fit(x, x**3, (x**3)[:, None] * np.ones((3, 5)))
    x = np.array([8.0, 16, 32, 64])
    with pytest.raises(ValueError, match="positive"):
        fitting.lower_order_fit(x, -(x**3), np.ones((4, 5)))
