"""Weight-space operations on parameter pytrees: average, EMA, interpolation."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from agents.lm import weights


def _tree(value):
    return {"a": jnp.full((2, 3), value), "b": {"c": jnp.arange(4.0) * value}}


def test_average_is_the_weighted_mean_of_every_leaf():
    trees = [_tree(1.0), _tree(3.0), _tree(8.0)]
    mean = weights.average(trees)
    np.testing.assert_allclose(np.asarray(mean["a"]), 4.0)
    np.testing.assert_allclose(np.asarray(mean["b"]["c"]), np.arange(4.0) * 4.0, rtol=1e-6)
    weighted = weights.average(trees[:2], weights=[3.0, 1.0])
    np.testing.assert_allclose(np.asarray(weighted["a"]), 1.5)
    with pytest.raises(ValueError, match="weights must have shape"):
        weights.average(trees, weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="another structure"):
        weights.average([_tree(1.0), {"a": jnp.zeros((2, 3))}])


def test_ema_is_optax_incremental_update():
    new, old = _tree(2.0), _tree(-1.0)
    ours = weights.ema(new, old, 0.25)
    theirs = optax.incremental_update(new, old, 0.25)
    np.testing.assert_allclose(np.asarray(ours["b"]["c"]), np.asarray(theirs["b"]["c"]), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(ours["a"]), 2.0 * 0.25 - 0.75)


def test_interpolation_hits_both_ends_exactly():
    start, end = _tree(0.1), _tree(0.7)
    for fraction, expected in ((0.0, start), (1.0, end)):
        got = weights.interpolate(start, end, fraction)
        np.testing.assert_array_equal(np.asarray(got["b"]["c"]), np.asarray(expected["b"]["c"]))
    np.testing.assert_allclose(np.asarray(weights.interpolate(start, end, 0.5)["a"]), 0.4, rtol=1e-6)
