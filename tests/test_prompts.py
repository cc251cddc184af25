"""Prompted tasks on the oracle: exact conditional likelihoods against enumeration and Monte Carlo."""

from __future__ import annotations

import itertools

import jax
import numpy as np
import pytest
from scipy import stats

from envs import token_mdp as tm
from envs.token_mdp import EOS

VOCAB, MIN_LENGTH, MAX_LENGTH = 3, 2, 4


def _oracle(kind="hmm"):
    return tm.random_oracle(
        kind, vocab_size=VOCAB, num_hidden=3, branching=2, emission_support=2, min_length=MIN_LENGTH,
        max_length=MAX_LENGTH, eos_hazard=0.4, smoothing=0.05, seed=5,
    )  # fmt: skip


def _completions(prompt):
    """Every sequence array that starts with ``prompt`` and ends inside the window."""
    window, rows = MAX_LENGTH + 1, []
    for length in range(max(MIN_LENGTH, len(prompt)), MAX_LENGTH + 1):
        for body in itertools.product(range(1, VOCAB + 1), repeat=length - len(prompt)):
            rows.append(list(prompt) + list(body) + [EOS] * (window - length))
    return np.asarray(rows, dtype=np.int32)


@pytest.mark.parametrize("kind", ["hmm", "markov"])
@pytest.mark.parametrize("prompt", [(), (2,), (1, 3)])
def test_conditional_likelihoods_sum_to_one_and_match_monte_carlo(kind, prompt):
    oracle = _oracle(kind)
    rows = _completions(prompt)
    probs = np.exp(np.asarray(tm.conditional_log_likelihood(oracle, rows, len(prompt)), dtype=np.float64))
    np.testing.assert_allclose(probs.sum(), 1.0, atol=1e-5)
    # log p*(y | x) = log p*(x, y) - log p*(x): the joint over all completions sums to p*(x).
    joint = np.exp(np.asarray(tm.log_likelihood(oracle, rows), dtype=np.float64))
    np.testing.assert_allclose(probs, joint / joint.sum(), rtol=1e-4, atol=1e-7)
    n = 100_000
    prompts = np.tile(np.asarray(prompt, np.int32), (n, 1)).reshape(n, len(prompt))
    samples = np.asarray(tm.sample_completions(oracle, jax.random.key(1), prompts))
    index = {tuple(r): i for i, r in enumerate(rows.tolist())}
    counts = np.bincount([index[tuple(r)] for r in samples.tolist()], minlength=len(rows))
    assert counts.sum() == n  # every sample continues its prompt inside the window
    assert stats.chisquare(counts, probs / probs.sum() * n).pvalue > 1e-3


def test_next_token_distributions_given_any_prefix_match_the_forward_scores():
    oracle = _oracle()
    x = np.asarray(tm.sample(oracle, jax.random.key(0), 64))
    full = np.asarray(tm.score(oracle, x).log_probs)
    for length in range(0, MIN_LENGTH + 1):
        given = np.asarray(tm.next_token_log_probs(oracle, x[:, :length]))
        np.testing.assert_allclose(given, full[:, length], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.exp(given).sum(-1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="regular tokens only"):
        tm.next_token_log_probs(oracle, np.zeros((2, 1), np.int32))


def test_prompt_sets_are_disjoint_any_size_and_empty_prompt_is_unprompted():
    oracle = tm.OracleConfig().build()
    train, heldout = tm.split_prompts(oracle, jax.random.key(3), 1000, 300, 4)
    assert train.shape == (1000, 4) and heldout.shape == (300, 4)
    assert not {tuple(r) for r in np.asarray(train).tolist()} & {tuple(r) for r in np.asarray(heldout).tolist()}
    completions = np.asarray(tm.sample_completions(oracle, jax.random.key(4), train[:10], num_per_prompt=3))
    assert completions.shape == (30, oracle.window)
    np.testing.assert_array_equal(completions[:, :4], np.repeat(np.asarray(train[:10]), 3, axis=0))
    mask = np.asarray(tm.completion_mask(completions, 4))
    assert mask[:, :4].sum() == 0 and np.all(mask[:, 4:].sum(1) >= 1)
    # The empty prompt: conditional likelihood = likelihood; completions = oracle samples.
    empty_train, empty_heldout = tm.split_prompts(oracle, jax.random.key(3), 5, 7, 0)
    assert empty_train.shape == (5, 0) and empty_heldout.shape == (7, 0)
    x = tm.sample(oracle, jax.random.key(8), 16)
    np.testing.assert_allclose(tm.conditional_log_likelihood(oracle, x, 0), tm.log_likelihood(oracle, x), rtol=1e-6)
    np.testing.assert_array_equal(tm.sample_completions(oracle, jax.random.key(8), empty_train[:1].repeat(16, 0)), x)


def test_bad_prompts_raise_clear_errors():
    oracle = _oracle()
    with pytest.raises(ValueError, match="prompt_length must be an integer in \\[0, min_length = 2\\]"):
        tm.sample_prompts(oracle, jax.random.key(0), 4, 3)
    with pytest.raises(ValueError, match="regular tokens"):
        tm.sample_completions(oracle, jax.random.key(0), np.zeros((2, 1), np.int32))
    with pytest.raises(ValueError, match="num_per_prompt"):
        tm.sample_completions(oracle, jax.random.key(0), np.ones((2, 1), np.int32), 0)
    with pytest.raises(ValueError, match="avoided the held-out set"):
        tm.split_prompts(oracle, jax.random.key(0), 50, 400, 1, max_rounds=2)
    with pytest.raises(ValueError, match="ends inside its prompt"):
        tm.conditional_log_likelihood(oracle, np.array([[1, 0, 0, 0, 0]], np.int32), 2)
