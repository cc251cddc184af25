"""Edges of the regularized core and the solvers' public boundary: the soft value at every
temperature (against a 60-digit reference), infinite values, and bad arguments refused with a
``ValueError`` that names them. Each case failed on the code before the fix."""

from __future__ import annotations

import math
from decimal import Decimal, localcontext

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from envs.tabular import garnet
from mdvi import Regularization, greedy_log_policy, soft_value
from mdvi import tabular as solvers

# ---------------------------------------------------------------------------------------------
# soft_value against an arbitrary-precision reference
# ---------------------------------------------------------------------------------------------


def decimal_soft_value(q, temperature, ref) -> float:
    """``t log sum_a p(a) exp(q(a) / t)`` in 60-digit decimal arithmetic, on the exact values of
    the floating-point inputs. A given ``ref`` is a probability vector up to rounding and is
    normalised exactly (the convention of :meth:`KLDivergence.conjugate`); ``None`` is the
    counting measure (mass ``A``)."""
    with localcontext() as ctx:
        ctx.prec = 60
        ctx.Emin, ctx.Emax = -(10**9), 10**9
        support = [i for i in range(len(q)) if ref is None or ref[i] > 0]
        weights = [Decimal(1) if ref is None else Decimal(float(ref[i])) for i in support]
        if ref is not None:
            total = sum(weights)
            weights = [w / total for w in weights]
        values = [Decimal(float(q[i])) for i in support]
        t = Decimal(float(temperature))
        top = max(values)
        mass = sum(w * ((v - top) / t).exp() for w, v in zip(weights, values))
        return float(top + t * mass.ln())


def _probability_vector(data, size: int, dtype) -> np.ndarray:
    weights = data.draw(hnp.arrays(np.float64, size, elements=st.floats(0, 1)))
    weights[data.draw(st.integers(0, size - 1))] = max(weights.max(), 1e-3)  # a non-empty support
    ref = (weights / weights.sum()).astype(dtype)
    # XLA on CPU flushes subnormals to zero: keep weights exactly 0 or normal.
    return np.where(ref < np.finfo(dtype).tiny, 0, ref).astype(dtype)


@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-5), (np.float64, 1e-12)])
@given(data=st.data(), log10_temperature=st.floats(-8, 12), counting=st.booleans())
def test_soft_value_matches_a_60_digit_reference_for_temperatures_1e_minus8_to_1e12(
    dtype, rtol, data, log10_temperature, counting
):
    """Relative error ``|V - V_ref| / max(|V_ref|, max |q|)`` (normwise: the rounding of the
    reference mean alone is ``eps max |q|``) within 1e-5 in float32 and 1e-12 in float64."""
    with jax.enable_x64(dtype == np.float64):
        size = data.draw(st.integers(1, 6))
        elements = st.floats(-1e6, 1e6, width=np.finfo(dtype).bits, allow_subnormal=False)  # XLA flushes subnormals
        q = data.draw(hnp.arrays(dtype, size, elements=elements))
        ref = None if counting else _probability_vector(data, size, dtype)
        temperature = float(dtype(10.0**log10_temperature))
        value = float(soft_value(jnp.asarray(q), temperature, None if ref is None else jnp.asarray(ref)))
        expected = decimal_soft_value(q, temperature, ref)
        support = np.ones(size, bool) if ref is None else ref > 0
        # The floor covers the reference's own rounding (t * 1e-60 of an exactly normalised ref)
        # and XLA's flush to zero of subnormal intermediates (p q near 1e-38 in float32).
        scale = max(abs(expected), float(np.abs(q[support]).max()), 1e-30)
        assert abs(value - expected) <= rtol * scale, (value, expected, temperature)


@pytest.mark.parametrize(
    "ref, temperature, expected",
    [
        ([1 / 3, 1 / 3, 1 / 3], math.inf, 2.0),
        ([1 / 3, 1 / 3, 1 / 3], 1e8, 2.0),
        ([0.2, 0.3, 0.5], 1e8, 2.3),
        ([0.2, 0.3, 0.5], math.inf, 2.3),
    ],
)
def test_soft_value_at_large_temperature_is_the_reference_mean(ref, temperature, expected):
    value = float(soft_value(jnp.array([1.0, 2.0, 3.0]), temperature, jnp.array(ref)))
    assert value == pytest.approx(expected, rel=1e-6)


def test_soft_value_with_the_counting_measure_at_infinite_temperature_is_infinite():
    assert float(soft_value(jnp.array([1.0, 2.0]), math.inf)) == math.inf  # inf * log 2
    assert float(soft_value(jnp.array([5.0]), math.inf)) == 5.0  # one action: log 1 = 0


@pytest.mark.parametrize(
    "q, expected", [([math.inf, 1.0], math.inf), ([-math.inf, -math.inf], -math.inf), ([-math.inf, 1.0], 1.0)]
)
def test_soft_value_of_infinite_q(q, expected):
    assert float(soft_value(jnp.array(q), 1.0)) == expected


def test_soft_value_gradient_stays_the_greedy_policy_across_the_regimes(x64):
    q = jnp.array([0.3, -2.0, 1.5, 1.0])
    ref = jnp.array([0.1, 0.2, 0.3, 0.4])
    for temperature in (1e-3, 0.5, 3.0, 1e6):  # max-shift and centred forms
        grad = jax.grad(lambda x, t=temperature: soft_value(x, t, ref))(q)
        np.testing.assert_allclose(grad, jnp.exp(greedy_log_policy(q, temperature, ref)), rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("temperature", [-1.0, math.nan, np.array([1.0, -0.5])])
def test_bad_concrete_temperatures_are_refused(temperature):
    with pytest.raises(ValueError, match="temperature"):
        soft_value(jnp.array([[1.0, 2.0, 3.0], [0.0, 1.0, 2.0]]), temperature)
    with pytest.raises(ValueError, match="temperature"):
        greedy_log_policy(jnp.array([[1.0, 2.0, 3.0], [0.0, 1.0, 2.0]]), temperature)


@pytest.mark.parametrize("argument", ["ref", "log_ref"])
def test_a_reference_of_the_wrong_shape_is_named(argument):
    with pytest.raises(ValueError, match=f"{argument} must have the shape of q"):
        soft_value(jnp.array([1.0, 2.0, 3.0]), 1.0, **{argument: jnp.array([0.5, 0.5])})


# ---------------------------------------------------------------------------------------------
# Solvers: bad arguments
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mdp():
    return garnet(6, 2, 3, discount=0.9, seed=0)


@pytest.mark.parametrize("iterations", [-1, 2.5, "3", True])
def test_exact_mdvi_refuses_a_bad_iteration_count(mdp, iterations):
    with pytest.raises(ValueError, match="num_iterations must be an integer >= 0"):
        solvers.exact_mdvi(mdp, Regularization.from_alpha_beta(0.9, 1.0), iterations)


def test_exact_mdvi_refuses_a_wrong_shape_v_star(mdp):
    with pytest.raises(ValueError, match=r"v_star must have shape \(6,\)"):
        solvers.exact_mdvi(mdp, Regularization.from_alpha_beta(0.9, 1.0), 3, v_star=jnp.zeros(5))


@pytest.mark.parametrize("regularization", [None, 0.9, (0.9, 1.0)])
def test_solvers_refuse_a_missing_regularization(mdp, regularization):
    with pytest.raises(ValueError, match="regularization must be a Regularization"):
        solvers.exact_mdvi(mdp, regularization, 3)
    with pytest.raises(ValueError, match="regularization must be a Regularization"):
        solvers.sampled_mdvi(jax.random.key(0), mdp, regularization, 3, 2)
