"""IRL-SFT, MLE and chi^2 IQ-Learn losses on the token-level MDP, against independent NumPy code.

The losses return per-token values; ``_mean`` reduces them as the objectives do.
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp

from agents import lm
from agents.lm import losses as lm_losses
from envs import token_mdp as tm
from envs.token_mdp import EOS, sequence_mask


def _mean(per_token, mask):
    return lm_losses.masked_mean(per_token, jnp.asarray(mask, per_token.dtype))


def _random_batch(seed, batch=4, length=7, actions=5, scale=2.0):
    """Random logits and tokens with an EOS somewhere in each sequence, padded with EOS."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(batch, length, actions)) * scale
    tokens = rng.integers(1, actions, size=(batch, length))
    for b in range(batch):
        end = rng.integers(1, length)  # EOS position
        tokens[b, end:] = EOS
    tokens[0, -1] = EOS  # a sequence that uses the whole window
    tokens[0, :-1] = rng.integers(1, actions, size=length - 1)
    return logits, tokens


def _numpy_terms(logits, tokens, mask, discount, temperature=1.0):
    """Per-transition (Q, V, V', valid) by explicit loops: V' = 0 after EOS and past the window."""
    B, T, _ = logits.shape
    out = []
    for b in range(B):
        for t in range(T):
            if mask[b, t] == 0:
                continue
            a = tokens[b, t]
            q = logits[b, t, a]
            v = temperature * logsumexp(logits[b, t] / temperature)
            if a == EOS or t == T - 1:
                v_next = 0.0
            else:
                v_next = temperature * logsumexp(logits[b, t + 1] / temperature)
            nll = -(logits[b, t, a] - logsumexp(logits[b, t]))
            out.append((q, v, v_next, nll))
    return np.array(out)


def test_irl_sft_equals_nll_plus_lambda_td_squared_on_hand_made_logits(x64):
    # Two sequences, 3 actions (EOS = 0), window 4. Sequence 0 ends at t = 2 and is padded at
    # t = 3 with garbage logits; sequence 1 ends at the last position.
    logits = np.array(
        [
            [[0.0, 1.0, 2.0], [1.0, -1.0, 0.5], [3.0, 0.0, 0.0], [50.0, -80.0, 9.0]],
            [[0.2, 0.1, -0.3], [-1.0, 2.0, 1.0], [0.0, 0.0, 4.0], [1.5, 0.5, -0.5]],
        ]
    )
    tokens = np.array([[2, 1, EOS, EOS], [1, 2, 2, EOS]])
    mask = np.asarray(sequence_mask(tokens))
    np.testing.assert_array_equal(mask, [[1, 1, 1, 0], [1, 1, 1, 1]])
    lam, gamma = 0.3, 0.9
    terms = _numpy_terms(logits, tokens, mask, gamma)
    q, v, v_next, nll = terms.T
    td = q - gamma * v_next
    expected = nll.mean() + lam * np.mean(td**2)
    got = _mean(
        lm_losses.irl_sft_loss(jnp.asarray(logits), jnp.asarray(tokens), jnp.asarray(mask), lam=lam, discount=gamma), mask
    )
    np.testing.assert_allclose(float(got), expected, rtol=1e-12)
    # The transition that takes EOS at t = 2 has V' = 0: its reward is Q(s_2, EOS) = 3.0.
    reward = lm_losses.recovered_reward(jnp.asarray(logits), jnp.asarray(tokens), jnp.asarray(mask), discount=gamma)
    assert float(reward[0, 2]) == 3.0 and float(reward[0, 3]) == 0.0
    np.testing.assert_allclose(float(reward[0, 1]), -1.0 - gamma * logsumexp([3.0, 0.0, 0.0]), rtol=1e-12)
    # Padding is excluded: changing padded logits changes nothing.
    other = logits.copy()
    other[0, 3] = [-7.0, 30.0, 2.0]
    again = _mean(
        lm_losses.irl_sft_loss(jnp.asarray(other), jnp.asarray(tokens), jnp.asarray(mask), lam=lam, discount=gamma), mask
    )
    assert float(again) == float(got)


def test_closed_form_with_uniform_logits(x64):
    # All logits 0 over A actions: NLL = log A per token, V = log A, Q = 0, so the TD residual
    # is -gamma log A before a regular token and 0 on the EOS step.
    A, gamma, lam = 4, 1.0, 0.5
    tokens = jnp.asarray([[1, 2, 3, EOS, EOS, EOS]])
    logits = jnp.zeros((1, 6, A))
    mask = sequence_mask(tokens)
    loss = _mean(lm_losses.irl_sft_loss(logits, tokens, mask, lam=lam, discount=gamma), mask)
    expected = np.log(A) + lam * (3 * np.log(A) ** 2 + 0.0) / 4
    np.testing.assert_allclose(float(loss), expected, rtol=1e-12)


def test_lambda_zero_is_exactly_mle_loss_and_gradient(x64):
    logits, tokens = _random_batch(0)
    logits, tokens = jnp.asarray(logits), jnp.asarray(tokens)
    mask = sequence_mask(tokens)
    mle = lambda x: _mean(lm_losses.mle_loss(x, tokens, mask), mask)  # noqa: E731
    irl0 = lambda x: _mean(lm_losses.irl_sft_loss(x, tokens, mask, lam=0.0, discount=0.95), mask)  # noqa: E731
    (l_mle, g_mle), (l_irl, g_irl) = (jax.jit(jax.value_and_grad(f))(logits) for f in (mle, irl0))
    assert float(l_mle) == float(l_irl)
    np.testing.assert_array_equal(np.asarray(g_mle), np.asarray(g_irl))
    # ...and a positive lambda does change the gradient.
    irl = lambda x: _mean(lm_losses.irl_sft_loss(x, tokens, mask, lam=0.1, discount=0.95), mask)  # noqa: E731
    assert not np.allclose(np.asarray(g_mle), np.asarray(jax.jit(jax.grad(irl))(logits)))


def test_lambda_zero_is_exactly_mle_for_transformer_parameters(x64):
    model = lm.language_model(lm.TransformerSpec(width=16, num_heads=2), tm.TokenSpace(5, 7, 0))
    _, tokens = _random_batch(1)
    tokens = jnp.asarray(tokens)
    params = jax.jit(model.init_params)(jax.random.key(0), tokens)

    def loss(params, which):
        logits = model.logits(params, tokens)
        mask = sequence_mask(tokens)
        if which == "mle":
            return _mean(lm_losses.mle_loss(logits, tokens, mask), mask)
        return _mean(lm_losses.irl_sft_loss(logits, tokens, mask, lam=0.0), mask)

    # Both in one program: two separately compiled programs may fuse the same log-sum-exp
    # differently (one float32 ulp), which says nothing about the loss.
    both = jax.jit(lambda p: tuple(jax.value_and_grad(loss)(p, w) for w in ("mle", "irl")))
    (l_mle, g_mle), (l_irl, g_irl) = both(params)
    assert float(l_mle) == float(l_irl)
    for a, b in zip(jax.tree.leaves(g_mle), jax.tree.leaves(g_irl)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("temperature", [1.0, 0.3])
def test_chi2_iq_learn_matches_its_formula_on_random_arrays(x64, seed, temperature):
    logits, tokens = _random_batch(seed, batch=5, length=9, actions=6)
    mask = np.array(sequence_mask(tokens))
    rng = np.random.default_rng(100 + seed)
    mask[rng.random(mask.shape) < 0.2] = 0.0  # extra holes: the loss must honour any mask
    gamma, alpha = 0.97, 0.5
    q, v, v_next, _ = _numpy_terms(logits, tokens, mask, gamma, temperature).T
    reward = q - gamma * v_next
    expected = -reward.mean() + (v - gamma * v_next).mean() + np.mean(reward**2) / (4 * alpha)
    got = lm_losses.iq_learn_chi2_loss(
        jnp.asarray(logits), jnp.asarray(tokens), jnp.asarray(mask), alpha=alpha, discount=gamma, temperature=temperature
    )
    got = _mean(got, mask)
    np.testing.assert_allclose(float(got), expected, rtol=1e-10)


def test_irl_sft_is_chi2_iq_learn_with_alpha_one_over_four_lambda(x64):
    logits, tokens = (jnp.asarray(x) for x in _random_batch(7))
    mask = sequence_mask(tokens)
    for lam in (0.01, 0.1, 1.0):
        irl = _mean(lm_losses.irl_sft_loss(logits, tokens, mask, lam=lam, discount=0.9), mask)
        iq = _mean(lm_losses.iq_learn_chi2_loss(logits, tokens, mask, alpha=1 / (4 * lam), discount=0.9), mask)
        np.testing.assert_allclose(float(irl), float(iq), rtol=1e-12)


def test_constant_on_one_state_changes_irl_but_not_mle(x64):
    logits, tokens = _random_batch(3)
    tokens[1, :5] = [1, 2, 3, 4, 1]  # state s_3 of sequence 1 is reached by a regular token
    logits, tokens = jnp.asarray(logits), jnp.asarray(tokens)
    mask = sequence_mask(tokens)
    c, gamma = 2.5, 0.9
    shifted = logits.at[1, 3, :].add(c)
    mle = lambda x: float(_mean(lm_losses.mle_loss(x, tokens, mask), mask))  # noqa: E731
    irl = lambda x: float(_mean(lm_losses.irl_sft_loss(x, tokens, mask, lam=0.1, discount=gamma), mask))  # noqa: E731
    np.testing.assert_allclose(mle(shifted), mle(logits), rtol=1e-13)
    assert abs(irl(shifted) - irl(logits)) > 1e-3
    # The TD term sees the offset: reward at t = 3 rises by c, at t = 2 falls by gamma c.
    r0 = lm_losses.recovered_reward(logits, tokens, mask, discount=gamma)
    r1 = lm_losses.recovered_reward(shifted, tokens, mask, discount=gamma)
    delta = np.array(r1 - r0)
    np.testing.assert_allclose(delta[1, 3], c, rtol=1e-12)
    np.testing.assert_allclose(delta[1, 2], -gamma * c, rtol=1e-12)
    delta[1, 2:4] = 0
    np.testing.assert_allclose(delta, 0.0, atol=1e-12)


def _online(e_logits, e_tokens, e_mask, p_logits, p_tokens, p_mask, **kwargs):
    terms = lm_losses.online_irl_sft_loss(e_logits, e_tokens, e_mask, p_logits, p_tokens, p_mask, **kwargs)
    return _mean(terms.expert, e_mask) + _mean(terms.policy, p_mask)


def test_online_variant_mixes_value_terms(x64):
    e_logits, e_tokens = (jnp.asarray(x) for x in _random_batch(11))
    p_logits, p_tokens = (jnp.asarray(x) for x in _random_batch(12, batch=2))
    e_mask, p_mask = sequence_mask(e_tokens), sequence_mask(p_tokens)
    lam, gamma = 0.2, 0.95
    args = (e_logits, e_tokens, e_mask, p_logits, p_tokens, p_mask)
    offline = _mean(lm_losses.irl_sft_loss(e_logits, e_tokens, e_mask, lam=lam, discount=gamma), e_mask)
    at_zero = _online(*args, lam=lam, policy_fraction=0.0, discount=gamma)
    np.testing.assert_allclose(float(at_zero), float(offline), rtol=1e-12)
    f = 0.25
    q, v, v_next, _ = _numpy_terms(*(np.asarray(x) for x in (e_logits, e_tokens, e_mask)), gamma).T
    _, pv, pv_next, _ = _numpy_terms(*(np.asarray(x) for x in (p_logits, p_tokens, p_mask)), gamma).T
    reward = q - gamma * v_next
    expected = (
        -reward.mean() + (1 - f) * (v - gamma * v_next).mean() + f * (pv - gamma * pv_next).mean() + lam * np.mean(reward**2)
    )
    got = _online(*args, lam=lam, policy_fraction=f, discount=gamma)
    np.testing.assert_allclose(float(got), expected, rtol=1e-10)


def test_gradient_flows_through_the_next_state_value(x64):
    # Only the TD term depends on logits[:, t + 1] through V(s_{t+1}) for the transition at t;
    # with the full gradient (no stop_gradient), the TD term's gradient at s_1 has a -gamma V'
    # component from transition 0.
    logits = jnp.zeros((1, 3, 3))
    tokens = jnp.asarray([[1, EOS, EOS]])
    mask = sequence_mask(tokens)
    grad = jax.grad(lambda x: _mean(lm_losses.td_squared(x, tokens, mask, discount=1.0), mask))(logits)
    # td_0 = Q(s0, 1) - V(s1) = -log 3; only td_0 and td_1 = Q(s1, EOS) = 0 are real.
    # d(mean td^2)/d logits[0, 1, :] = (2 td_0 * (-softmax) + 2 td_1 * onehot(EOS)) / 2.
    expected = -np.log(3) * -np.full(3, 1 / 3)
    np.testing.assert_allclose(np.asarray(grad[0, 1]), expected, rtol=1e-12)


def test_bad_inputs_raise_clear_errors():
    logits, tokens = (jnp.asarray(x) for x in _random_batch(0))
    mask = sequence_mask(tokens)
    with pytest.raises(ValueError, match="lam must lie in"):
        lm_losses.irl_sft_loss(logits, tokens, mask, lam=-0.1)
    with pytest.raises(ValueError, match="discount must lie in"):
        lm_losses.irl_sft_loss(logits, tokens, mask, lam=0.1, discount=1.5)
    with pytest.raises(ValueError, match="alpha must lie in"):
        lm_losses.iq_learn_chi2_loss(logits, tokens, mask, alpha=0.0)
    with pytest.raises(ValueError, match="policy_fraction"):
        lm_losses.online_irl_sft_loss(logits, tokens, mask, logits, tokens, mask, lam=0.1, policy_fraction=2.0)
    with pytest.raises(ValueError, match="tokens must be integers"):
        lm_losses.mle_loss(logits, tokens.astype(jnp.float32), mask)
    with pytest.raises(AssertionError):  # chex shape checks at the boundary
        lm_losses.mle_loss(logits[0], tokens, mask)


def test_out_of_range_token_ids_are_refused_or_nan_never_a_wrong_number():
    # Issue 10 item 7: token -1 used to score the last action (a plausible 1.609), 99 gave NaN.
    logits, tokens = (jnp.asarray(x) for x in _random_batch(5))
    mask = sequence_mask(tokens)
    for bad in (-1, 5, 99):
        broken = tokens.at[1, 0].set(bad)
        with pytest.raises(ValueError, match="token ids must be"):
            lm_losses.mle_loss(logits, broken, mask)
        with pytest.raises(ValueError, match="token ids must be"):
            lm_losses.irl_sft_loss(logits, broken, mask, lam=0.1)
        # Under jit the check cannot run: the documented answer is NaN at that token.
        per_token = jax.jit(lm_losses.mle_loss)(logits, broken, mask)
        assert np.isnan(float(per_token[1, 0]))
        assert np.isnan(float(_mean(per_token, mask)))
        assert np.isfinite(np.asarray(per_token[0])).all()


def test_oracle_scores_out_of_range_ids_as_nan_under_jit():
    # Issue 10 item 7: inside jit the oracle's log-likelihood clamped an out-of-range id (-4.56).
    oracle = tm.random_oracle(vocab_size=4, num_hidden=3, branching=2, emission_support=2, min_length=1, max_length=4)
    tokens = jnp.asarray([[1, 2, 3, EOS, EOS], [2, 9, 1, EOS, EOS], [3, -1, 1, EOS, EOS]])
    with pytest.raises(ValueError, match="token ids must be"):
        tm.log_likelihood(oracle, tokens)
    log_likelihood = np.asarray(jax.jit(lambda x: tm.log_likelihood(oracle, x))(tokens))
    assert np.isfinite(log_likelihood[0]) and np.isnan(log_likelihood[1:]).all()


class LossVariantsTest(chex.TestCase):
    """Each per-token loss with and without jit (rlax style), and vmapped over stacked batches."""

    def setUp(self):
        super().setUp()
        logits, tokens = _random_batch(21, batch=3, length=6, actions=4)
        self.logits = jnp.asarray(logits, jnp.float32)
        self.tokens = jnp.asarray(tokens, jnp.int32)
        self.mask = sequence_mask(self.tokens)
        self.gamma = 0.9
        self.q, self.v, self.v_next, self.nll = _numpy_terms(logits, tokens, np.asarray(self.mask), self.gamma).T
        self.real = np.asarray(self.mask) > 0

    @chex.all_variants
    def test_mle_and_irl_sft_per_token(self):
        mle = self.variant(lm_losses.mle_loss)
        irl = self.variant(functools.partial(lm_losses.irl_sft_loss, lam=0.3, discount=self.gamma))
        per_token_mle = np.asarray(mle(self.logits, self.tokens, self.mask))
        per_token_irl = np.asarray(irl(self.logits, self.tokens, self.mask))
        reward = self.q - self.gamma * self.v_next
        np.testing.assert_allclose(per_token_mle[self.real], self.nll, rtol=1e-5)
        np.testing.assert_allclose(per_token_irl[self.real], self.nll + 0.3 * reward**2, rtol=1e-5)
        assert np.all(per_token_mle[~self.real] == 0) and np.all(per_token_irl[~self.real] == 0)

    @chex.all_variants
    def test_chi2_iq_learn_and_reward_per_token(self):
        iq = self.variant(functools.partial(lm_losses.iq_learn_chi2_loss, alpha=0.5, discount=self.gamma))
        reward_fn = self.variant(functools.partial(lm_losses.recovered_reward, discount=self.gamma))
        reward = self.q - self.gamma * self.v_next
        expected = -reward + (self.v - self.gamma * self.v_next) + reward**2 / 2.0
        np.testing.assert_allclose(np.asarray(iq(self.logits, self.tokens, self.mask))[self.real], expected, rtol=1e-5)
        np.testing.assert_allclose(np.asarray(reward_fn(self.logits, self.tokens, self.mask))[self.real], reward, rtol=1e-5)

    @chex.all_variants
    def test_online_terms_reduce_to_irl_sft_without_policy_samples(self):
        online = self.variant(functools.partial(lm_losses.online_irl_sft_loss, lam=0.2, policy_fraction=0.0, discount=self.gamma))
        args = (self.logits, self.tokens, self.mask) * 2
        terms = online(*args)
        expected = lm_losses.irl_sft_loss(self.logits, self.tokens, self.mask, lam=0.2, discount=self.gamma)
        np.testing.assert_allclose(np.asarray(terms.expert), np.asarray(expected), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(np.asarray(terms.policy), 0.0)

    @chex.all_variants
    def test_vmapped_over_stacked_batches_equals_each_batch(self):
        stacked = [jnp.stack([x, x[::-1]]) for x in (self.logits, self.tokens, self.mask)]
        irl = functools.partial(lm_losses.irl_sft_loss, discount=self.gamma)
        lams = jnp.asarray([0.1, 0.7])
        batched = self.variant(jax.vmap(lambda lg, tk, mk, lam: irl(lg, tk, mk, lam=lam)))(*stacked, lams)
        for i in range(2):
            one = irl(stacked[0][i], stacked[1][i], stacked[2][i], lam=float(lams[i]))
            np.testing.assert_allclose(np.asarray(batched[i]), np.asarray(one), rtol=1e-6)
