"""The regularized core: soft value, greedy step, parametrisations, information quantities."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mdvi import Regularization, get_divergence, mdvi_greedy_step, munchausen_target, soft_td_residual
from mdvi.regularized import entropy, greedy_log_policy, kl_divergence, policy_from_sum, scaled_log_policy, soft_value

finite32 = st.floats(-1e30, 1e30, allow_nan=False, allow_infinity=False).map(np.float32)
q_vectors = hnp.arrays(np.float32, st.integers(1, 8), elements=finite32)
temperatures = st.one_of(st.just(0.0), st.floats(1e-30, 1e4).map(lambda t: float(np.float32(t))))


def _ref_for(q, data):
    weights = data.draw(hnp.arrays(np.float64, q.shape, elements=st.floats(0, 1)))
    keep = data.draw(st.integers(0, q.shape[0] - 1))
    weights[keep] = max(weights[keep], 1e-3)  # at least one action in the support
    ref = (weights / weights.sum()).astype(np.float32)
    # XLA on CPU flushes subnormal floats to zero: keep reference weights exactly 0 or normal.
    return np.where(ref < np.finfo(np.float32).tiny, 0.0, ref).astype(np.float32)


@given(q=q_vectors, temperature=temperatures, data=st.data())
def test_soft_value_bounds_and_finiteness(q, temperature, data):
    ref = _ref_for(q, data)
    value = float(soft_value(jnp.asarray(q), temperature, jnp.asarray(ref)))
    support = ref > 0
    q_max = float(q[support].max())
    lower = q_max + temperature * math.log(float(ref[support].min()))
    assert math.isfinite(value)
    slack = 1e-5 * max(1.0, abs(q_max), abs(lower))
    assert lower - slack <= value <= q_max + slack


@given(q=q_vectors, temperature=temperatures)
def test_counting_measure_value_bounds(q, temperature):
    value = float(soft_value(jnp.asarray(q), temperature))
    q_max = float(q.max())
    upper = q_max + temperature * math.log(q.shape[0])
    slack = 1e-5 * max(1.0, abs(q_max), abs(upper))
    assert math.isfinite(value)
    assert q_max - slack <= value <= upper + slack


@given(q=q_vectors, temperature=temperatures)
def test_greedy_policy_is_a_distribution(q, temperature):
    log_pi = greedy_log_policy(jnp.asarray(q), temperature)
    pi = np.exp(np.asarray(log_pi, np.float64))
    assert not np.any(np.isnan(np.asarray(log_pi)))
    assert abs(pi.sum() - 1.0) < 1e-5
    # the greedy policy puts its mass on the best actions as temperature -> 0
    if temperature == 0.0:
        assert np.all(pi[q < q.max()] == 0.0)


def test_soft_value_tends_to_max_as_temperature_vanishes(x64):
    q = jnp.array([[1.0, 3.0, -2.0, 3.0 - 1e-3], [1e12, -1e12, 0.0, 5.0]])
    ref = jnp.array([[0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25]])
    q_max = jnp.max(q, -1)
    previous = None
    for temperature in [1.0, 1e-1, 1e-2, 1e-4, 1e-8]:
        gap = np.asarray(q_max - soft_value(q, temperature, ref))
        assert np.all(gap >= -1e-12)
        if previous is not None:
            assert np.all(gap <= previous + 1e-12)
        previous = gap
    assert np.all(previous < 1e-6)
    np.testing.assert_array_equal(soft_value(q, 0.0, ref), q_max)


def test_soft_value_matches_direct_formula_and_handles_zero_reference(x64):
    rng = np.random.default_rng(0)
    q = rng.normal(size=(5, 6)) * 3
    ref = rng.dirichlet(np.ones(6), size=5)
    ref[:, 2] = 0.0
    ref /= ref.sum(-1, keepdims=True)
    tau = 0.7
    expected = tau * np.log(np.sum(ref * np.exp(q / tau), -1))
    np.testing.assert_allclose(soft_value(q, tau, ref), expected, rtol=1e-12)
    # zero-probability actions cannot carry the value, however large their q
    q_big = q.copy()
    q_big[:, 2] = 1e6
    np.testing.assert_allclose(soft_value(q_big, tau, ref), expected, rtol=1e-12)
    # ref and log_ref are the same input
    log_ref = np.where(ref > 0, np.log(np.where(ref > 0, ref, 1.0)), -np.inf)
    np.testing.assert_allclose(soft_value(q, tau, log_ref=log_ref), expected, rtol=1e-12)
    with pytest.raises(ValueError, match="either ref or log_ref"):
        soft_value(q, tau, ref, log_ref=log_ref)


def test_soft_value_gradient_is_the_greedy_policy(x64):
    rng = np.random.default_rng(1)
    q = jnp.asarray(rng.normal(size=7))
    ref = jnp.asarray(rng.dirichlet(np.ones(7)))
    grad = jax.grad(lambda x: soft_value(x, 0.3, ref))(q)
    np.testing.assert_allclose(grad, jnp.exp(greedy_log_policy(q, 0.3, ref)), rtol=1e-12)
    # stable for extreme logits: finite value and gradient
    extreme = jnp.array([1e30, -1e30, 0.0])
    assert np.all(np.isfinite(jax.grad(lambda x: soft_value(x, 1e-3))(extreme)))


def test_soft_value_is_the_conjugate_of_kl(x64):
    rng = np.random.default_rng(2)
    q = rng.normal(size=5)
    ref = rng.dirichlet(np.ones(5))
    tau = 0.4
    log_pi = greedy_log_policy(q, tau, ref)
    objective = jnp.sum(jnp.exp(log_pi) * q) - tau * kl_divergence(log_pi, jnp.log(ref))
    np.testing.assert_allclose(objective, soft_value(q, tau, ref), rtol=1e-12)
    # any other distribution does worse
    other = jnp.log(jnp.asarray(rng.dirichlet(np.ones(5))))
    worse = jnp.sum(jnp.exp(other) * q) - tau * kl_divergence(other, jnp.log(ref))
    assert worse < objective


def test_batched_temperatures_broadcast(x64):
    q = jnp.array([[1.0, 2.0], [3.0, 0.0]])
    temps = jnp.array([1.0, 0.0])
    values = soft_value(q, temps)
    np.testing.assert_allclose(values[0], np.log(np.exp(1) + np.exp(2)), rtol=1e-12)
    assert values[1] == 3.0


def test_hard_greedy_splits_ties_and_respects_support(x64):
    q = jnp.array([2.0, 2.0, 1.0, 5.0])
    pi = jnp.exp(greedy_log_policy(q, 0.0, ref=jnp.array([0.5, 0.5, 0.0, 0.0])))
    np.testing.assert_allclose(pi, [0.5, 0.5, 0.0, 0.0])


# ---------------------------------------------------------------------------------------------
# Parametrisations
# ---------------------------------------------------------------------------------------------


def test_regularization_round_trips():
    reg = Regularization.from_kl_entropy(0.027, 0.003)
    assert reg.alpha == pytest.approx(0.9)
    assert reg.beta == pytest.approx(1 / 0.03)
    assert reg.temperature == pytest.approx(0.03)
    assert reg.kl_weight == pytest.approx(0.027)
    assert reg.entropy_weight == pytest.approx(0.003)
    again = Regularization.from_munchausen(reg.temperature, reg.munchausen_alpha)
    assert again.alpha == pytest.approx(reg.alpha) and again.beta == pytest.approx(reg.beta)
    back = Regularization.from_alpha_beta(reg.alpha, reg.beta)
    assert back.kl_weight == pytest.approx(0.027)
    vi = Regularization.from_kl_entropy(0.0, 0.0)
    assert vi.alpha == 0.0 and math.isinf(vi.beta) and vi.temperature == 0.0


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: Regularization.from_kl_entropy(-0.1, 0.0), "kl_weight"),
        (lambda: Regularization.from_kl_entropy(0.1, float("nan")), "NaN"),
        (lambda: Regularization.from_kl_entropy(float("inf"), 0.0), "finite"),
        (lambda: Regularization.from_alpha_beta(1.5, 1.0), "alpha must lie in"),
        (lambda: Regularization.from_alpha_beta(0.5, 0.0), "beta"),
        (lambda: Regularization.from_alpha_beta(0.5, -2.0), "beta"),
        (lambda: Regularization.from_munchausen(-0.03, 0.9), "temperature"),
        (lambda: Regularization.from_munchausen(0.03, -0.1), "alpha must lie in"),
        (lambda: Regularization.from_alpha_beta("a", 1.0), "real number"),
    ],
)
def test_regularization_rejects_bad_input(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_unknown_divergence_is_named():
    with pytest.raises(ValueError, match="unknown divergence 'tsallis'"):
        get_divergence("tsallis")


# ---------------------------------------------------------------------------------------------
# Greedy step: policy form equals sum form
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tau, kappa", [(0.5, 0.1), (0.1, 0.0), (0.0, 0.2), (1.0, 1.0)])
def test_recursive_greedy_step_equals_softmax_of_discounted_sum(x64, tau, kappa):
    rng = np.random.default_rng(3)
    reg = Regularization.from_kl_entropy(tau, kappa)
    log_pi = jnp.full((4, 3), -jnp.log(3.0))
    s = jnp.zeros((4, 3))
    for _ in range(12):
        q = jnp.asarray(rng.normal(size=(4, 3)) * 2)
        log_pi = mdvi_greedy_step(q, log_pi, reg)
        s = q + reg.alpha * s
        np.testing.assert_allclose(log_pi, policy_from_sum(s, reg), atol=1e-10)
        # and it solves argmax <pi, q> - tau KL(pi || pi_prev) + kappa H(pi)


def test_greedy_step_solves_the_regularized_problem(x64):
    rng = np.random.default_rng(4)
    reg = Regularization.from_kl_entropy(0.3, 0.2)
    q = jnp.asarray(rng.normal(size=6))
    log_prev = jnp.log(jnp.asarray(rng.dirichlet(np.ones(6))))

    def objective(log_p):
        return (
            jnp.sum(jnp.exp(log_p) * q)
            - reg.kl_weight * kl_divergence(log_p, log_prev)
            + reg.entropy_weight * entropy(log_p)
        )

    best = objective(mdvi_greedy_step(q, log_prev, reg))
    for _ in range(20):
        candidate = jnp.log(jnp.asarray(rng.dirichlet(np.ones(6))))
        assert objective(candidate) < best


def test_entropy_and_kl_match_numpy(x64):
    p = np.array([0.5, 0.25, 0.25, 0.0])
    q = np.array([0.25, 0.25, 0.25, 0.25])
    with np.errstate(divide="ignore"):
        log_p, log_q = np.log(p), np.log(q)
    assert float(entropy(log_p)) == pytest.approx(1.5 * math.log(2))
    assert float(kl_divergence(log_p, log_q)) == pytest.approx(0.5 * math.log(2) + 0.5 * 0)
    assert math.isinf(float(kl_divergence(log_q, log_p)))


# ---------------------------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------------------------


def test_scaled_log_policy_is_finite_at_zero_temperature():
    q = jnp.array([1.0, 3.0, 2.0])
    np.testing.assert_allclose(scaled_log_policy(q, 0.0), [-2.0, 0.0, -1.0])
    tau = 0.5
    np.testing.assert_allclose(scaled_log_policy(q, tau), tau * jax.nn.log_softmax(q / tau), atol=1e-6)


def test_munchausen_target_by_hand():
    # tau = 1, alpha_M = 0.9, l0 = -1: log pi(a=0 | s) = log softmax([0, ln 3])[0] = -ln 4
    q_tm1 = jnp.array([0.0, math.log(3.0)])
    q_t = jnp.array([1.0, 1.0])
    r, discount = jnp.array(0.5), jnp.array(0.9)
    bonus_unclipped = -math.log(4.0)  # -1.386..., below l0 = -1, so clipped
    expected = 0.5 + 0.9 * max(bonus_unclipped, -1.0) + 0.9 * (1.0 + math.log(2.0))
    got = munchausen_target(q_tm1, jnp.array(0), r, discount, q_t, 1.0, 0.9, -1.0)
    assert float(got) == pytest.approx(expected, rel=1e-6)
    # action 1: log pi = log(3/4) = -0.2877, inside the clip
    expected1 = 0.5 + 0.9 * math.log(0.75) + 0.9 * (1.0 + math.log(2.0))
    got1 = munchausen_target(q_tm1, jnp.array(1), r, discount, q_t, 1.0, 0.9, -1.0)
    assert float(got1) == pytest.approx(expected1, rel=1e-6)
    # terminal transition: no bootstrap
    got_terminal = munchausen_target(q_tm1, jnp.array(1), r, jnp.array(0.0), q_t, 1.0, 0.9, -1.0)
    assert float(got_terminal) == pytest.approx(0.5 + 0.9 * math.log(0.75), rel=1e-6)


def test_munchausen_target_reduces_to_q_learning():
    q_tm1 = jnp.array([0.3, -0.2, 1.0])
    q_t = jnp.array([0.1, 2.0, -1.0])
    got = munchausen_target(q_tm1, jnp.array(2), jnp.array(1.0), jnp.array(0.99), q_t, 0.0, 0.0)
    assert float(got) == pytest.approx(1.0 + 0.99 * 2.0)


def test_soft_td_residual():
    assert float(soft_td_residual(jnp.array(2.0), jnp.array(1.5), 0.9)) == pytest.approx(2.0 - 1.35)
    assert float(soft_td_residual(jnp.array(2.0), jnp.array(1.5), 0.0)) == 2.0
