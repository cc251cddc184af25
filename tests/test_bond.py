"""BOND (Sessa et al. 2024): the exact Best-of-N distribution, its identities, the quantile estimate,
the Jeffreys objective and BOND's convergence to pi_BoN on an enumerable task."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents.lm import bond, rl
from envs import alignment, token_mdp
from envs.token_mdp import OracleConfig


def _random_bandit(seed: int, size: int, dtype=jnp.float32):
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(size))
    rewards = rng.permutation(size).astype(np.float64)  # distinct: tie-free
    return jnp.asarray(np.log(p), dtype), jnp.asarray(rewards, dtype)


@pytest.mark.parametrize("n", [2, 4, 16])
def test_kl_of_best_of_n_to_the_reference_is_log_n_minus_n_minus_1_over_n(n):
    with jax.enable_x64(True):
        log_p, r = _random_bandit(n, 200_000, jnp.float64)
        log_bon = bond.best_of_n_log_probs(log_p, r, n)
        kl = float(rl.exact_kl(log_bon, log_p))
        expected = np.log(n) - (n - 1) / n
        assert abs(kl - expected) < 1e-6, (kl, expected)
        np.testing.assert_allclose(float(bond.bon_kl_to_reference(n)), expected, rtol=1e-6)
        # the identity is the continuous limit: a coarse support (ties of mass) misses it
        coarse_p, coarse_r = _random_bandit(0, 5, jnp.float64)
        coarse = float(rl.exact_kl(bond.best_of_n_log_probs(coarse_p, coarse_r, n), coarse_p))
        assert abs(coarse - expected) > 1e-3


def _enumerated_best_of_n(p: np.ndarray, r: np.ndarray, n: int) -> np.ndarray:
    """P(first index of the maximum reward among n i.i.d. draws is y), by enumerating all K^n tuples."""
    out = np.zeros(len(p))
    for tup in itertools.product(range(len(p)), repeat=n):
        rewards = r[list(tup)]
        out[tup[int(np.argmax(rewards))]] += np.prod(p[list(tup)])
    return out


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_tie_aware_best_of_n_equals_enumeration(n):
    p = np.asarray([0.05, 0.25, 0.1, 0.3, 0.2, 0.1])
    r = np.asarray([1.0, 0.0, 1.0, 2.0, 0.0, 2.0])  # three levels, two completions each
    with jax.enable_x64(True):
        exact = np.exp(np.asarray(bond.best_of_n_log_probs(jnp.log(jnp.asarray(p)), jnp.asarray(r), n)))
        np.testing.assert_allclose(exact, _enumerated_best_of_n(p, r, n), atol=1e-12)
        # each reward level carries F^n - F^-^n
        p_le, p_lt, level = (np.asarray(x) for x in bond.reward_quantiles(jnp.log(jnp.asarray(p)), jnp.asarray(r)))
        for value in np.unique(r):
            members = r == value
            np.testing.assert_allclose(exact[members].sum(), p_le[members][0] ** n - p_lt[members][0] ** n, atol=1e-12)
        np.testing.assert_allclose(level, [p[r == v].sum() for v in r], atol=1e-15)
    # float32 and a zero-probability completion stay finite and normalised
    p0 = np.append(p, 0.0)
    r0 = np.append(r, 3.0)
    log_bon = bond.best_of_n_log_probs(jnp.log(jnp.asarray(p0, jnp.float32)), jnp.asarray(r0, jnp.float32), n)
    assert np.isneginf(np.asarray(log_bon)[-1]) and not np.any(np.isnan(np.asarray(log_bon)))
    np.testing.assert_allclose(np.exp(np.asarray(log_bon)).sum(), 1.0, atol=1e-6)


@pytest.mark.parametrize("n", [1, 4, 16])
def test_expected_quantile_under_best_of_n_is_n_over_n_plus_1(n):
    with jax.enable_x64(True):
        log_p, r = _random_bandit(1, 1_000_000, jnp.float64)
        p_le, _, _ = bond.reward_quantiles(log_p, r)
        log_bon = bond.best_of_n_log_probs(log_p, r, n)
        expected = float(jnp.sum(jnp.exp(log_bon) * p_le))
        assert abs(expected - n / (n + 1)) < 5e-6, (expected, n / (n + 1))
        assert abs(float(bond.effective_n_from_quantile(expected)) - n) < 1e-3 * n**2


def test_quantile_estimate_is_unbiased():
    """Monte Carlo: the mean of p̂<= over many independent sets of k reference samples is p<=."""
    log_p, r = _random_bandit(2, 40)
    r = jnp.floor(r / 4)  # with ties, p<= counts them
    p_le, _, _ = bond.reward_quantiles(log_p, r)
    ys = jnp.asarray([0, 7, 19, 33])
    k, sets = 4, 40_000
    draws = jax.random.categorical(jax.random.key(0), log_p, shape=(sets, k))
    estimates = bond.quantile_estimate(jnp.broadcast_to(r[ys], (sets, len(ys))), r[draws])  # [sets, 4]
    mean = np.asarray(estimates.mean(0))
    se = np.asarray(estimates.std(0)) / np.sqrt(sets)
    z = (mean - np.asarray(p_le[ys])) / np.maximum(se, 1e-9)
    assert np.all(np.abs(z) < 4.5), (mean, np.asarray(p_le[ys]), z)
    assert np.all(np.asarray(estimates) * k == np.round(np.asarray(estimates) * k))  # counts over k


def test_jeffreys_interpolates_the_two_kls():
    rng = np.random.default_rng(3)
    log_a = jax.nn.log_softmax(jnp.asarray(rng.normal(size=(3, 7)), jnp.float32))
    log_b = jax.nn.log_softmax(jnp.asarray(rng.normal(size=(3, 7)), jnp.float32))
    forward, backward = rl.exact_kl(log_a, log_b), rl.exact_kl(log_b, log_a)
    np.testing.assert_allclose(bond.jeffreys(log_a, log_b, 0.0), forward, rtol=1e-6)
    np.testing.assert_allclose(bond.jeffreys(log_a, log_b, 1.0), backward, rtol=1e-6)
    np.testing.assert_allclose(bond.jeffreys(log_a, log_b, 0.3), 0.7 * forward + 0.3 * backward, rtol=1e-6)
    assert np.all(np.asarray(forward) != np.asarray(backward))


def test_effective_n_from_kl_inverts_the_identity():
    for n in (1.5, 4.0, 64.0):
        np.testing.assert_allclose(float(bond.effective_n_from_kl(bond.bon_kl_to_reference(n))), n, rtol=1e-3)


def test_jbond_reward_penalises_only_a_loss_to_both_anchor_samples():
    r = jnp.asarray([0.0, 1.0, 2.0, 3.0])
    anchors = jnp.asarray([[1.0, 2.0]] * 4)
    np.testing.assert_allclose(bond.jbond_reward(r, anchors), [-np.log(16.0), 0.0, 0.0, 0.0], rtol=1e-6)


def test_bad_configs_name_the_argument():
    with pytest.raises(ValueError, match="method"):
        bond.BondConfig(method="dpo")
    with pytest.raises(ValueError, match="b must"):
        bond.BondConfig(b=1.5)
    with pytest.raises(ValueError, match="J-BOND"):
        bond.BondConfig(method="jbond", n=4)
    assert bond.jbond_config().anchor == "ema"


ORACLE = OracleConfig(vocab_size=4, num_hidden=4, min_length=3, max_length=5, eos_hazard=0.3)
TASK = alignment.PreferenceConfig(oracle=ORACLE, prompt_length=2, max_completion=3, num_targets=1, num_forbidden=1)


def _enumerable_task():
    """The golden preference reward on all 84 completions of two prompts, the oracle as pi_ref;
    a tiny fixed jitter breaks the reward's ties (BOND's backward term assumes a tie-free reward)."""
    task = TASK.build()
    completions = alignment.enumerate_completions(task.space, jnp.asarray([[1, 2], [3, 4]]))
    X, M, T = completions.shape
    flat = completions.reshape(-1, T)
    log_ref = token_mdp.conditional_log_likelihood(task.oracle, flat, 2).reshape(X, M)
    golden = task.reward(flat).reshape(X, M)
    jitter = 1e-3 * jax.random.uniform(jax.random.key(5), (X, M))
    return log_ref, golden + jitter, golden


def test_bond_reaches_best_of_n_on_an_enumerable_task():
    """Jeffreys BOND (b = 0.5, sampled as the algorithm does) ends within exact KL(pi_BoN || pi) < 0.02
    for N = 4 and N = 16, from a start far from pi_BoN."""
    log_ref, reward, golden = _enumerable_task()
    for n in (4, 16):
        config = bond.BondConfig(
            method="jeffreys", n=n, b=0.5, steps=800, eval_every=800, learning_rate=0.05,
            policy_samples=16, forward_samples=16, quantile_samples=32,
        )  # fmt: skip
        _, curves = jax.jit(bond.make_tabular_train(config))(
            jax.random.key(n), log_ref, reward, golden, {"beta": 0.1, "eval_n": n}
        )
        start, final = float(curves["kl_bon_forward"][0]), float(curves["kl_bon_forward"][-1])
        assert start > 0.3 and final < 0.02, (n, start, final)
        assert float(curves["golden"][-1]) > float(curves["golden"][0])


def test_inverse_cdf_sampling_matches_the_row_distributions():
    log_p = jnp.log(jnp.asarray([[0.5, 0.0, 0.2, 0.3], [0.0, 0.0, 0.0, 1.0]]))
    draws = np.asarray(bond.sample_rows(jax.random.key(0), log_p, (20_000,)))
    assert draws.shape == (2, 20_000)
    freq = np.stack([np.bincount(row, minlength=4) / row.size for row in draws])
    np.testing.assert_allclose(freq, np.exp(np.asarray(log_p)), atol=0.015)
    assert np.all(freq[:, 1] == 0) and np.all(draws[1] == 3)


@pytest.mark.slow  # ~20 s per gamma on a loaded 2-core machine (sampling compiles twice)
def test_jbond_objective_trains_a_language_model_and_moves_its_ema_anchor():
    """J-BOND as a trainer objective: finite losses, and after each step the anchor is the EMA
    (gamma) of the policy's weights; gamma = 1 makes it the policy itself."""
    import dataclasses

    from agents.lm import LMConfig, TransformerSpec, make_trainer, objectives, weights

    task = TASK.build()
    space = task.space
    prompts = jnp.pad(token_mdp.sample_prompts(task.oracle, jax.random.key(0), 16, 2), ((0, 0), (0, space.window - 2)))
    config = LMConfig(model=TransformerSpec(num_layers=1, width=16, num_heads=2), objective="mle", batch_size=4,
                      steps=2, eval_every=1, learning_rate=1e-2, warmup_steps=1)  # fmt: skip
    for gamma in (0.25, 1.0):
        name = f"jbond_test_{gamma}"
        objectives.register(bond.jbond_objective(name, lambda p, t: task.reward(t), 2, 4, gamma=gamma), replace=True)
        trainer = make_trainer(dataclasses.replace(config, objective=name), space)
        state = trainer.init(jax.random.key(1), prompts)
        anchor0 = state.extra["anchor"]
        # two steps: the warmup schedule's first step has step size 0, so theta_1 = anchor_0 and
        # after step 2 the anchor is ema(theta_2, anchor_0)
        state1, curves = trainer.run(state, prompts, None, prompts.shape[0], 2)
        assert np.all(np.isfinite(np.asarray(curves["loss"])))
        assert 0.0 <= float(curves["loses_to_both"][0]) <= 1.0
        expected = weights.ema(state1.params, anchor0, gamma)
        for got, want in zip(jax.tree.leaves(state1.extra["anchor"]), jax.tree.leaves(expected)):
            np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6)
        moved = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(state1.params), jax.tree.leaves(anchor0)))
        assert moved > 0
