"""The regularized core in the rlax style: each public function under ``chex.all_variants``
(with and without jit, on a device and via pmap), batched and vmapped, against a float64
NumPy computation of the same formula."""

from __future__ import annotations

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import parameterized

from mdvi import (
    Regularization,
    entropy,
    greedy_log_policy,
    kl_divergence,
    mdvi_greedy_step,
    munchausen_target,
    soft_value,
)

Q = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 4.0], [2.0, 2.0, -3.0]], np.float32)
REF = np.array([[0.2, 0.3, 0.5], [0.0, 0.5, 0.5], [1 / 3, 1 / 3, 1 / 3]], np.float32)


def _log(x):
    with np.errstate(divide="ignore"):
        return np.log(np.asarray(x, np.float64))


def _numpy_soft_value(q, t, ref):
    q, ref = np.asarray(q, np.float64), np.asarray(ref, np.float64)
    return t * np.log(np.sum(ref * np.exp(q / t), axis=-1))


def _numpy_log_policy(q, t, log_ref):
    logits = np.asarray(q, np.float64) / t + log_ref
    top = logits.max(-1, keepdims=True)
    return logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))


class SoftValueTest(chex.TestCase):
    @chex.all_variants
    @parameterized.named_parameters(("cold", 0.1), ("unit", 1.0), ("hot", 10.0))
    def test_batch(self, temperature):
        fn = self.variant(functools.partial(soft_value, temperature=temperature))
        np.testing.assert_allclose(fn(Q, ref=REF), _numpy_soft_value(Q, temperature, REF), rtol=1e-5)

    @chex.all_variants
    def test_zero_temperature_is_the_max_over_the_support(self):
        fn = self.variant(functools.partial(soft_value, temperature=0.0))
        np.testing.assert_array_equal(fn(Q, ref=REF), [3.0, 4.0, 2.0])

    @chex.all_variants
    def test_vmapped_over_rows_and_temperatures(self):
        temperatures = np.array([0.1, 1.0, 10.0], np.float32)
        fn = self.variant(jax.vmap(soft_value))
        expected = [_numpy_soft_value(Q[i], temperatures[i], REF[i]) for i in range(3)]
        np.testing.assert_allclose(fn(Q, temperatures, REF), expected, rtol=1e-5)


class GreedyLogPolicyTest(chex.TestCase):
    @chex.all_variants
    @parameterized.named_parameters(("cold", 0.1), ("unit", 1.0))
    def test_batch(self, temperature):
        fn = self.variant(functools.partial(greedy_log_policy, temperature=temperature))
        log_pi = np.asarray(fn(Q, ref=REF))
        expected = _numpy_log_policy(Q, temperature, _log(REF))
        support = REF > 0
        np.testing.assert_allclose(log_pi[support], expected[support], rtol=1e-5, atol=1e-5)
        assert np.all(np.isneginf(log_pi[~support]))
        np.testing.assert_allclose(np.exp(log_pi).sum(-1), 1.0, rtol=1e-6)

    @chex.all_variants
    def test_vmapped_matches_batch(self):
        fn = self.variant(jax.vmap(lambda q, ref: greedy_log_policy(q, 0.5, ref)))
        np.testing.assert_allclose(fn(Q, REF), greedy_log_policy(Q, 0.5, REF), rtol=1e-6)


class MDVIGreedyStepTest(chex.TestCase):
    @chex.all_variants
    @parameterized.named_parameters(("kl_and_entropy", 0.5, 0.1), ("kl_only", 0.3, 0.0), ("entropy_only", 0.0, 0.2))
    def test_is_the_softmax_of_q_over_temperature_plus_alpha_log_prev(self, tau, kappa):
        regularization = Regularization.from_kl_entropy(tau, kappa)
        log_prev = _log(REF)
        step = self.variant(lambda q, log_prev, alpha, beta: mdvi_greedy_step(q, log_prev, Regularization(alpha, beta)))
        got = np.asarray(step(Q, log_prev.astype(np.float32), np.float32(regularization.alpha), np.float32(regularization.beta)))
        # alpha = 0 ignores the previous policy entirely, also where it was 0
        log_ref = np.zeros_like(log_prev) if regularization.alpha == 0 else regularization.alpha * log_prev
        expected = _numpy_log_policy(Q, regularization.temperature, log_ref)
        finite = np.isfinite(expected)
        np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-5, atol=1e-5)
        assert np.all(np.isneginf(got[~finite]))

    @chex.all_variants
    def test_vmapped_over_traced_alpha_including_zero(self):
        alphas = np.array([0.0, 0.5, 0.9], np.float32)
        log_prev = _log(REF[1]).astype(np.float32)  # a zero in the previous policy

        def step(alpha):
            return mdvi_greedy_step(Q[1], log_prev, Regularization(alpha, np.float32(2.0)))

        got = np.asarray(self.variant(jax.vmap(step))(alphas))
        for alpha, row in zip(alphas, got):
            log_ref = np.zeros(3) if alpha == 0 else alpha * _log(REF[1])
            expected = _numpy_log_policy(Q[1], 0.5, log_ref)
            finite = np.isfinite(expected)
            np.testing.assert_allclose(row[finite], expected[finite], rtol=1e-5, atol=1e-5)
        assert np.isfinite(got[0]).all()  # alpha = 0: every action back in the support


class MunchausenTargetTest(chex.TestCase):
    def setUp(self):
        super().setUp()
        self.q_tm1 = np.array([[0.0, math.log(3.0)], [1.0, -1.0]], np.float32)
        self.a_tm1 = np.array([0, 1], np.int32)
        self.r_t = np.array([0.5, -1.0], np.float32)
        self.discount_t = np.array([0.9, 0.0], np.float32)
        self.q_t = np.array([[1.0, 1.0], [3.0, 0.0]], np.float32)

    def _expected(self, i, temperature, alpha, clip):
        log_pi = _numpy_log_policy(self.q_tm1[i], temperature, 0.0)[self.a_tm1[i]]
        bonus = alpha * np.clip(temperature * log_pi, clip, 0.0)
        return self.r_t[i] + bonus + self.discount_t[i] * _numpy_soft_value(self.q_t[i], temperature, np.ones(2))

    @chex.all_variants
    @parameterized.named_parameters(("m_dqn", 1.0, 0.9), ("soft", 0.3, 0.0))
    def test_one_transition(self, temperature, alpha):
        fn = self.variant(functools.partial(munchausen_target, temperature=temperature, munchausen_alpha=alpha))
        got = fn(self.q_tm1[0], self.a_tm1[0], self.r_t[0], self.discount_t[0], self.q_t[0])
        np.testing.assert_allclose(got, self._expected(0, temperature, alpha, -1.0), rtol=1e-5)

    @chex.all_variants
    def test_vmapped_over_a_batch(self):
        target = functools.partial(munchausen_target, temperature=1.0, munchausen_alpha=0.9)
        fn = self.variant(jax.vmap(target))
        got = fn(self.q_tm1, self.a_tm1, self.r_t, self.discount_t, self.q_t)
        np.testing.assert_allclose(got, [self._expected(i, 1.0, 0.9, -1.0) for i in range(2)], rtol=1e-5)


class InformationTest(chex.TestCase):
    @chex.all_variants
    def test_entropy_and_kl(self):
        p = np.array([[0.5, 0.25, 0.25, 0.0], [0.25, 0.25, 0.25, 0.25]], np.float32)
        q = np.array([[0.25, 0.25, 0.25, 0.25], [0.4, 0.4, 0.1, 0.1]], np.float32)
        log_p, log_q = _log(p).astype(np.float32), _log(q).astype(np.float32)
        with np.errstate(invalid="ignore"):
            terms = np.where(p > 0, p * (_log(p) - _log(q)), 0.0)
        np.testing.assert_allclose(self.variant(kl_divergence)(log_p, log_q), terms.sum(-1), rtol=1e-5)
        np.testing.assert_allclose(self.variant(entropy)(log_p), [1.5 * math.log(2), math.log(4)], rtol=1e-6)
        # KL is +inf when p leaves q's support
        assert math.isinf(float(self.variant(kl_divergence)(log_q[:1], log_p[:1])[0]))
        # vmapped over rows equals the batch
        rows = self.variant(jax.vmap(kl_divergence))(log_p, log_q)
        np.testing.assert_allclose(rows, kl_divergence(jnp.asarray(log_p), jnp.asarray(log_q)), rtol=1e-6)
