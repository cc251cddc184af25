"""The oracle language model: exact likelihoods against enumeration and Monte Carlo, masks, errors."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from envs import token_mdp as tm
from envs.token_mdp import EOS


def _tiny_oracle(kind="hmm"):
    return tm.random_oracle(
        kind, vocab_size=3, num_hidden=2, branching=2, emission_support=2, min_length=1, max_length=3,
        eos_hazard=0.4, smoothing=0.05, seed=3,
    )  # fmt: skip


def _all_sequences(vocab_size, min_length, max_length):
    window = max_length + 1
    rows = []
    for length in range(min_length, max_length + 1):
        for body in itertools.product(range(1, vocab_size + 1), repeat=length):
            rows.append(list(body) + [EOS] * (window - length))
    return np.asarray(rows, dtype=np.int32)


@pytest.mark.parametrize("kind", ["hmm", "markov"])
def test_exact_likelihoods_normalise_and_match_monte_carlo_frequencies(kind):
    oracle = _tiny_oracle(kind)
    sequences = _all_sequences(3, 1, 3)
    probs = np.exp(np.asarray(tm.log_likelihood(oracle, sequences), dtype=np.float64))
    np.testing.assert_allclose(probs.sum(), 1.0, atol=1e-5)
    n = 200_000
    samples = np.asarray(jax.jit(tm.sample, static_argnums=2)(oracle, jax.random.key(0), n))
    index = {tuple(row): i for i, row in enumerate(sequences)}
    counts = np.bincount([index[tuple(row)] for row in samples], minlength=len(sequences))
    assert counts.sum() == n  # every sample is one of the enumerated sequences
    se = np.sqrt(probs * (1 - probs) / n)
    assert np.all(np.abs(counts / n - probs) <= 5 * se + 1e-4)
    chi2 = stats.chisquare(counts, probs / probs.sum() * n)
    assert chi2.pvalue > 1e-3


def test_markov_likelihood_equals_the_chain_product():
    oracle = tm.random_oracle("markov", vocab_size=5, branching=2, min_length=2, max_length=6, eos_hazard=0.3, seed=1)
    P = np.asarray(oracle.transition, dtype=np.float64)
    eos = np.asarray(oracle.eos_probs, dtype=np.float64)
    x = np.asarray(jax.jit(tm.sample, static_argnums=2)(oracle, jax.random.key(2), 50))
    expected = []
    for row in x:
        body = tm.strip(row)[0]
        logp = np.log(1 / 5) + np.log(1 - eos[0])
        for t in range(1, len(body)):
            logp += np.log(1 - eos[t]) + np.log(P[body[t - 1] - 1, body[t] - 1])
        logp += np.log(eos[len(body)])
        expected.append(logp)
    np.testing.assert_allclose(np.asarray(tm.log_likelihood(oracle, x)), expected, rtol=1e-5)


def test_sequence_entropy_two_ways_agree_by_monte_carlo():
    # E[-log p(X)] and E[sum_t H(p(. | X_<t))] are both the entropy of the sequence
    # distribution; their per-sample difference is a martingale with mean 0.
    oracle = tm.random_oracle("hmm", seed=5)
    x = jax.jit(tm.sample, static_argnums=2)(oracle, jax.random.key(1), 4000)
    scores = jax.jit(tm.score)(oracle, x)
    neg_log_p = -np.asarray(scores.log_likelihood, dtype=np.float64)
    summed_entropy = np.asarray(scores.entropy, dtype=np.float64).sum(-1)
    difference = neg_log_p - summed_entropy
    se = difference.std(ddof=1) / np.sqrt(len(difference))
    assert abs(difference.mean()) < 5 * se
    assert 20 < neg_log_p.mean() < 200  # a non-trivial source


def test_next_token_distributions_and_length_window():
    oracle = tm.random_oracle("hmm", min_length=4, max_length=9, seed=2)
    x = jax.jit(tm.sample, static_argnums=2)(oracle, jax.random.key(3), 300)
    lengths = np.asarray(tm.sequence_lengths(x))
    assert lengths.min() >= 4 and lengths.max() <= 9 and len(np.unique(lengths)) > 3
    scores = tm.score(oracle, x)
    mask = np.asarray(scores.mask) > 0
    total = np.exp(np.asarray(scores.log_probs, dtype=np.float64)).sum(-1)
    np.testing.assert_allclose(total[mask], 1.0, atol=1e-5)
    eos_lp = np.asarray(scores.log_probs)[..., EOS]
    assert np.all(np.isneginf(eos_lp[:, :4]))  # no EOS before min_length
    np.testing.assert_allclose(eos_lp[:, 9], 0.0)  # forced at max_length
    assert np.all(np.asarray(scores.entropy)[mask] >= -1e-6)
    assert np.all(np.asarray(scores.entropy)[~mask] == 0)
    # An impossible sequence (EOS too early) has likelihood 0.
    bad = np.zeros((1, 10), dtype=np.int32)
    bad[0, :2] = [1, 2]
    assert np.isneginf(float(tm.log_likelihood(oracle, bad)[0]))


def test_sampling_is_keyed_and_deterministic():
    oracle = _tiny_oracle()
    a = tm.sample(oracle, jax.random.key(7), 64)
    b = tm.sample(oracle, jax.random.key(7), 64)
    c = tm.sample(oracle, jax.random.key(8), 64)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))
    # Padding convention: EOS everywhere after the first EOS.
    for row in np.asarray(a):
        first = np.flatnonzero(row == EOS)[0]
        assert np.all(row[first:] == EOS)


def test_masks_and_transitions_on_a_hand_example():
    tokens = jnp.asarray([[3, 1, EOS, EOS, EOS], [2, 2, 2, 2, EOS], [EOS, EOS, EOS, EOS, EOS]])
    np.testing.assert_array_equal(np.asarray(tm.sequence_mask(tokens)), [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    np.testing.assert_array_equal(np.asarray(tm.continuation_mask(tokens)), [[1, 1, 0, 0, 0], [1, 1, 1, 1, 0], [0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(np.asarray(tm.sequence_lengths(tokens)), [2, 4, 0])
    assert tm.strip(tokens) == [[3, 1], [2, 2, 2, 2], []]
    prefix = jnp.asarray([3, 1, EOS, EOS, EOS])
    np.testing.assert_array_equal(np.asarray(tm.step(prefix, 2, 4)), [3, 1, 4, EOS, EOS])


def test_oracle_is_soft_optimal_with_its_log_probs_as_reward():
    # With r = log p(a|s), gamma = 1 and temperature 1, V(s) = log sum_a p(a|s) = 0 in every state.
    oracle = tm.random_oracle("hmm", seed=4)
    x = tm.sample(oracle, jax.random.key(0), 16)
    log_policy = np.asarray(tm.oracle_log_policy(oracle, x), dtype=np.float64)
    value = np.log(np.exp(log_policy).sum(-1))
    mask = np.asarray(tm.sequence_mask(x)) > 0
    np.testing.assert_allclose(value[mask], 0.0, atol=1e-5)


def test_bad_arguments_raise_clear_errors():
    oracle = _tiny_oracle()
    with pytest.raises(ValueError, match="unknown oracle kind"):
        tm.random_oracle("pcfg")
    with pytest.raises(ValueError, match="min_length <= max_length"):
        tm.random_oracle(min_length=10, max_length=5)
    with pytest.raises(ValueError, match="temperature"):
        tm.random_oracle(temperature=0.0)
    with pytest.raises(ValueError, match="eos_hazard"):
        tm.random_oracle(eos_hazard=1.5)
    with pytest.raises(ValueError, match="token ids must be < num_actions"):
        tm.log_likelihood(oracle, np.array([[1, 9, 0, 0]]))
    with pytest.raises(ValueError, match="must be integers"):
        tm.log_likelihood(oracle, np.array([[1.0, 2.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="positions"):
        tm.log_likelihood(oracle, np.array([[1, 2, 0]]))
    with pytest.raises(ValueError, match="must sum to 1"):
        tm.make_oracle([0.5, 0.6], np.eye(2), [[0, 1.0], [0, 1.0]], [0.0, 1.0])
    with pytest.raises(ValueError, match="EOS"):
        tm.make_oracle([0.5, 0.5], np.eye(2), [[0.5, 0.5], [0, 1.0]], [0.0, 1.0])
    with pytest.raises(ValueError, match="must contain EOS"):
        tm.validate_tokens(np.array([[1, 2, 3]]), 4, require_eos=True)


def test_sample_refuses_a_bad_num_sequences_by_name():
    # Issue 10 item 11: sample(oracle, key, -1) used to crash inside JAX.
    oracle = _tiny_oracle()
    for bad in (-1, 0, 2.5):
        with pytest.raises(ValueError, match="num_sequences must be a positive integer"):
            tm.sample(oracle, jax.random.key(0), bad)


def test_oracle_config_is_validated_up_front_and_builds_the_same_oracle():
    config = tm.OracleConfig(vocab_size=3, num_hidden=2, branching=2, emission_support=2, min_length=1, max_length=3, seed=3)
    built = config.build()
    again = tm.random_oracle(
        "hmm", vocab_size=3, num_hidden=2, branching=2, emission_support=2, min_length=1, max_length=3, seed=3
    )
    for a, b in zip(built, again):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert config.space == tm.TokenSpace(num_actions=4, window=4, min_length=1)
    with pytest.raises(ValueError, match="emission_support"):
        tm.OracleConfig(vocab_size=3, emission_support=5)
