"""Alignment on the oracle LM: golden tasks, reward models, WARM, RLOO, Best-of-N, EPIC."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import stats

from agents.lm import TransformerSpec, evaluation, language_model, reward_models, rl, weights
from agents.lm.sampling import sample, sequence_log_probs
from envs import alignment, token_mdp
from envs.token_mdp import OracleConfig

TINY_ORACLE = OracleConfig(
    vocab_size=3, num_hidden=3, branching=2, emission_support=2, min_length=3, max_length=4, eos_hazard=0.4
)
TINY_PREFERENCE = alignment.PreferenceConfig(
    oracle=TINY_ORACLE, prompt_length=2, max_completion=2, num_targets=1, num_forbidden=1, target_length=1
)
SPEC = TransformerSpec(num_layers=1, width=16, num_heads=2)


def _index(enumerated: np.ndarray) -> dict:
    return {tuple(row): i for i, row in enumerate(np.asarray(enumerated).tolist())}


# --------------------------------------------------------------------------- golden tasks


def test_enumeration_is_the_sampling_support():
    space = TINY_PREFERENCE.space
    prompts = jnp.asarray([[1, 2], [3, 3]])
    completions = alignment.enumerate_completions(space, prompts)
    assert completions.shape == (2, alignment.num_completions(space, 2), space.window) == (2, 12, 5)
    model = language_model(SPEC, space)
    params = model.init_params(jax.random.key(0), completions[0])
    log_probs = rl.enumerated_log_probs(model, params, completions, 2)
    np.testing.assert_allclose(jax.nn.logsumexp(log_probs, -1), 0.0, atol=1e-5)
    # the oracle's completions lie in the same support and their exact probabilities sum to 1
    task = TINY_PREFERENCE.build()
    oracle_log_probs = token_mdp.conditional_log_likelihood(task.oracle, completions.reshape(-1, 5), 2).reshape(2, 12)
    np.testing.assert_allclose(jax.nn.logsumexp(oracle_log_probs, -1), 0.0, atol=1e-5)


def test_prompted_sampling_keeps_the_prompt_and_scores_its_completion():
    space = alignment.PreferenceConfig().space
    model = language_model(SPEC, space)
    prompts = jnp.asarray(np.random.default_rng(0).integers(1, space.num_actions, (6, 4)), jnp.int32)
    params = model.init_params(jax.random.key(0), jnp.zeros((1, space.window), jnp.int32))
    samples = sample(model.decoder, params, jax.random.key(1), 6, prompts=prompts)
    np.testing.assert_array_equal(samples.tokens[:, :4], prompts)
    assert np.all(np.asarray(samples.log_probs[:, :4]) == 0)
    lengths = np.asarray(rl.completion_lengths(samples.tokens, 4))
    assert lengths.min() >= 1 and lengths.max() <= 3
    np.testing.assert_allclose(
        sequence_log_probs(model.logits(params, samples.tokens), samples.tokens, space, 4), samples.log_probs.sum(-1), rtol=1e-5
    )


def test_preference_reward_on_hand_made_completions():
    task = TINY_PREFERENCE.build()
    (target,), (forbidden,) = task.targets, task.forbidden
    other = ({1, 2, 3} - {target, forbidden}).pop()
    prompt = [target, target]
    rows = [prompt + [target, 0, 0], prompt + [forbidden, other, 0], prompt + [other, 0, 0]]
    r = np.asarray(task.reward(jnp.asarray(rows)))
    c = TINY_PREFERENCE
    expected = [
        (c.target_weight + c.echo_weight * 1) / 2,
        (-c.forbidden_weight - c.length_weight * 1) / 2,
        0.0,
    ]
    np.testing.assert_allclose(r, expected, atol=1e-6)
    # difficulty moves the targets from the oracle's frequent tokens to its rare ones
    ranking = np.argsort(-alignment.token_marginal(task.oracle, 2), kind="stable") + 1
    easy = dataclasses.replace(TINY_PREFERENCE, difficulty=0.0, num_forbidden=0).build()
    hard = dataclasses.replace(TINY_PREFERENCE, difficulty=1.0, num_forbidden=0).build()
    assert easy.targets == (ranking[0],) and hard.targets == (ranking[-1],)


def _iid_summary_task():
    """Sources of i.i.d. tokens with p(token) decreasing in the id, so the salient (highest
    surprisal) tokens of a source are its largest ids."""
    vocab, P, S = 8, 5, 3
    emission = np.concatenate([[0.0], np.arange(vocab, 0, -1) / np.arange(vocab, 0, -1).sum()])[None]
    oracle = token_mdp.make_oracle([1.0], [[1.0]], emission, token_mdp.length_schedule(P + 1, P + S, 0.5))
    config = alignment.SummaryConfig(
        oracle=OracleConfig(vocab_size=vocab, min_length=P + 1, max_length=P + S), source_length=P, max_summary=S, num_salient=2
    )
    return alignment.SummaryTask(config, oracle)


def test_summary_scores_on_hand_made_examples():
    task = _iid_summary_task()
    source = [1, 6, 2, 3, 5]  # salient: 6 and 5 (the two rarest tokens)
    np.testing.assert_array_equal(task.salient_tokens(jnp.asarray([source])), [[6, 5]])
    rows = [
        source + [6, 2, 3, 0],  # all entailed, copies the span 6 2 3, covers 6 only
        source + [6, 8, 0, 0],  # 8 is hallucinated
        source + [5, 0, 0, 0],  # one salient token, copied span of 1
        source + [3, 5, 7, 0],  # 3 5 copied, 7 hallucinated, covers 5
        source + [8, 4, 0, 0],  # nothing entailed
    ]
    scores = {k: np.asarray(v) for k, v in task.scores(jnp.asarray(rows)).items()}
    np.testing.assert_allclose(scores["consistency"], [1.0, 0.5, 1.0, 2 / 3, 0.0], atol=1e-6)
    np.testing.assert_array_equal(scores["entailed"], [1, 0, 1, 0, 0])
    np.testing.assert_allclose(scores["informativeness"], [0.5, 0.5, 0.5, 0.5, 0.0])
    np.testing.assert_array_equal(scores["extractiveness"], [3, 1, 1, 2, 0])
    np.testing.assert_array_equal(scores["length"], [3, 2, 1, 3, 2])


def test_reference_rule_hallucinates_at_its_rate():
    task = alignment.SummaryConfig().build()
    sources = token_mdp.sample_prompts(task.oracle, jax.random.key(0), 2000, task.prompt_length)
    clean = task.scores(task.reference_summaries(jax.random.key(1), sources, hallucination=0.0))
    np.testing.assert_array_equal(clean["consistency"], 1.0)
    noisy = task.scores(task.reference_summaries(jax.random.key(1), sources, hallucination=0.3))
    assert abs(float(jnp.mean(noisy["consistency"])) - 0.7) < 0.03


# --------------------------------------------------------------------------- reward models


def test_bradley_terry_loss_and_gradient_match_numpy():
    rng = np.random.default_rng(0)
    chosen, rejected = rng.normal(size=16) * 3, rng.normal(size=16) * 3
    expected = np.mean(-np.log(1 / (1 + np.exp(-(chosen - rejected)))))
    value, (g_chosen, g_rejected) = jax.value_and_grad(reward_models.bradley_terry_loss, argnums=(0, 1))(
        jnp.asarray(chosen, jnp.float32), jnp.asarray(rejected, jnp.float32)
    )
    np.testing.assert_allclose(value, expected, rtol=1e-6)
    sigma = 1 / (1 + np.exp(chosen - rejected))  # d/d chosen of -log sigmoid(c - r) = -sigmoid(r - c)
    np.testing.assert_allclose(g_chosen, -sigma / 16, rtol=1e-5)
    np.testing.assert_allclose(g_rejected, sigma / 16, rtol=1e-5)


def test_preference_labels_flip_an_exact_fraction():
    reward_a, reward_b = jnp.full((1000,), 50.0), jnp.zeros((1000,))  # the draw prefers a surely
    labels, flipped = reward_models.preference_labels(jax.random.key(0), reward_a, reward_b, 0.25)
    assert int(flipped.sum()) == 250
    np.testing.assert_array_equal(labels, ~flipped)
    # without flips the draw follows sigmoid(r_a - r_b)
    labels, _ = reward_models.preference_labels(jax.random.key(1), jnp.full((20000,), 1.0), jnp.zeros((20000,)), 0.0)
    assert abs(float(labels.mean()) - float(jax.nn.sigmoid(1.0))) < 0.01


def _pairs(space, count=64):
    rng = np.random.default_rng(0)
    make = lambda: jnp.asarray(  # noqa: E731
        np.concatenate([rng.integers(1, space.num_actions, (count, space.window - 1)), np.zeros((count, 1))], -1), jnp.int32
    )
    return {"chosen": make(), "rejected": make()}


def test_vmapped_reward_models_equal_separately_trained_ones():
    space = TINY_PREFERENCE.space
    config = reward_models.RewardConfig(steps=6, batch_size=8, warmup_steps=2)
    lm_params = language_model(SPEC, space).init_params(jax.random.key(0), jnp.zeros((1, space.window), jnp.int32))
    init = reward_models.init_from_lm(lm_params, SPEC, space, jax.random.key(1))
    train = reward_models.make_reward_train(config, SPEC, space)
    data = _pairs(space)
    keys, rates = jax.random.split(jax.random.key(2), 3), jnp.asarray([1e-3, 3e-3, 1e-2])
    together, losses = jax.jit(jax.vmap(train, in_axes=(0, None, None, 0)))(keys, init, data, rates)
    for i in range(3):
        alone, alone_losses = jax.jit(train)(keys[i], init, data, rates[i])
        np.testing.assert_allclose(losses[i], alone_losses, rtol=1e-5, atol=1e-6)
        # (Adam divides by tiny second moments where a gradient is ~0, so leaves agree to ~lr * 1e-3)
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-5), reward_models.unstack(together, 3)[i], alone
        )
    assert float(losses[2, -1]) != float(losses[0, -1])  # the learning rates made different models


def test_weight_average_of_identical_models_is_the_identity():
    space = TINY_PREFERENCE.space
    params = reward_models.init_from_lm(
        language_model(SPEC, space).init_params(jax.random.key(0), jnp.zeros((1, space.window), jnp.int32)),
        SPEC,
        space,
        jax.random.key(1),
    )
    averaged = weights.average([params, params, params, params])
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=0), averaged, params)
    apply = reward_models.reward_model(SPEC, space).apply
    tokens = _pairs(space)["chosen"]
    np.testing.assert_allclose(
        reward_models.sequence_scores(apply, averaged, tokens), reward_models.sequence_scores(apply, params, tokens), rtol=1e-5
    )
    # the init keeps the SFT torso and swaps the head
    assert reward_models.SCALAR_HEAD in params and reward_models.LOGITS_HEAD not in params


# --------------------------------------------------------------------------- RLOO, optimum, Best-of-N


def test_rloo_converges_to_the_cores_kl_optimum():
    """RLOO with k = 64 sampled completions per prompt on a tabular policy over the enumerated
    completions reaches pi* ∝ pi_ref exp(r / beta) (the core's greedy step) within KL 1e-3."""
    task = TINY_PREFERENCE.build()
    prompts = jnp.asarray([[1, 2], [3, 1]])
    completions = alignment.enumerate_completions(task.space, prompts)
    X, M, T = completions.shape
    r = task.reward(completions.reshape(-1, T)).reshape(X, M)
    log_ref = token_mdp.conditional_log_likelihood(task.oracle, completions.reshape(-1, T), 2).reshape(X, M)
    beta, k, steps = 0.2, 64, 3000
    log_star = rl.kl_optimum(r, log_ref, beta)
    optimizer = optax.adam(optax.cosine_decay_schedule(0.05, steps, 0.01))

    def step(carry, key):
        theta, state = carry
        index = jax.random.categorical(key, theta[:, None, :], shape=(X, k))

        def loss(theta):
            taken = jnp.take_along_axis(jax.nn.log_softmax(theta), index, -1)
            log_ratio = jax.lax.stop_gradient(taken - jnp.take_along_axis(log_ref, index, -1))
            return rl.rloo_loss(taken, rl.rloo_advantages(jnp.take_along_axis(r, index, -1), log_ratio, beta))

        updates, state = optimizer.update(jax.grad(loss)(theta), state, theta)
        return (optax.apply_updates(theta, updates), state), None

    (theta, _), _ = jax.jit(lambda c, keys: jax.lax.scan(step, c, keys))(
        (log_ref, optimizer.init(log_ref)), jax.random.split(jax.random.key(0), steps)
    )
    start = rl.exact_kl(log_ref, log_star)
    final = rl.exact_kl(jax.nn.log_softmax(theta), log_star)
    assert np.all(np.asarray(start) > 0.05)
    assert np.all(np.asarray(final) < 1e-3), (start, final)


def test_rloo_advantage_is_leave_one_out():
    rewards = jnp.asarray([[1.0, 2.0, 4.0]])
    log_ratio = jnp.asarray([[0.5, 0.0, -1.0]])
    total = np.asarray([1 - 0.25, 2.0, 4 + 0.5])
    expected = [total[i] - np.mean(np.delete(total, i)) for i in range(3)]
    np.testing.assert_allclose(rl.rloo_advantages(rewards, log_ratio, 0.5)[0], expected, rtol=1e-6)
    with pytest.raises(ValueError, match="k >= 2"):
        rl.rloo_advantages(rewards[:, :1], log_ratio[:, :1], 0.5)


@pytest.mark.parametrize("n", [1, 4])
def test_best_of_n_matches_its_exact_distribution(n):
    task = TINY_PREFERENCE.build()
    prompt = jnp.asarray([[1, 2]])
    completions = alignment.enumerate_completions(task.space, prompt)[0]
    log_ref = token_mdp.conditional_log_likelihood(task.oracle, completions, 2)
    golden = task.reward(completions)
    exact = np.exp(np.asarray(rl.best_of_n_log_probs(log_ref, golden, n), np.float64))
    np.testing.assert_allclose(exact.sum(), 1.0, atol=1e-5)
    draws = 4000
    candidates = token_mdp.sample_completions(task.oracle, jax.random.key(n), jnp.repeat(prompt, draws, 0), n)
    chosen = rl.best_of_n(candidates, task.reward(candidates), n)
    index = _index(completions)
    counts = np.bincount([index[tuple(row)] for row in np.asarray(chosen).tolist()], minlength=len(index))
    expected = exact / exact.sum() * draws
    keep = expected >= 5  # pool the rare cells
    observed = np.append(counts[keep], counts[~keep].sum())
    expected = np.append(expected[keep], expected[~keep].sum())
    if expected[-1] == 0:
        observed, expected = observed[:-1], expected[:-1]
    p_value = stats.chisquare(observed, expected).pvalue
    assert p_value > 1e-3, (observed, expected)
    if n > 1:  # and it is not the reference distribution
        reference = np.exp(np.asarray(log_ref, np.float64)) * draws
        assert stats.chisquare(counts[reference > 0], reference[reference > 0] * counts.sum() / reference.sum()).pvalue < 1e-6


def test_best_of_n_without_ties_is_the_cdf_formula():
    p = np.asarray([0.1, 0.2, 0.3, 0.4])
    r = np.asarray([3.0, 1.0, 0.0, 2.0])
    F = np.asarray([1.0, 0.5, 0.3, 0.9])  # P(r(Y) <= r(y))
    F_minus = F - p
    np.testing.assert_allclose(np.exp(rl.best_of_n_log_probs(jnp.log(p), jnp.asarray(r), 3)), F**3 - F_minus**3, rtol=1e-5)


# --------------------------------------------------------------------------- EPIC


def _tree_rewards(completions: np.ndarray, prompt_length: int, table: dict, potential: dict, discount: float):
    """Per-token rewards ``[X, M, T]`` of a reward given per (prefix, action) in ``table``, shaped by
    ``potential`` (0 after EOS)."""
    X, M, T = completions.shape
    out = np.zeros((X, M, T))
    for x in range(X):
        for m in range(M):
            row = completions[x, m].tolist()
            for t in range(prompt_length, T):
                state, action = tuple(row[:t]), row[t]
                nxt = 0.0 if action == 0 else potential.get(tuple(row[: t + 1]), 0.0)
                out[x, m, t] = table[(state, action)] + discount * nxt - potential.get(state, 0.0)
                if action == 0:
                    break
    return out


@pytest.mark.parametrize("discount", [1.0, 0.9])
def test_epic_distance_is_zero_for_shaped_copies_and_positive_otherwise(discount):
    space = TINY_PREFERENCE.space
    completions = np.asarray(alignment.enumerate_completions(space, jnp.asarray([[1, 2], [3, 3], [2, 1]])))
    mask = np.asarray(token_mdp.completion_mask(jnp.asarray(completions.reshape(-1, space.window)), 2)).reshape(completions.shape)
    rng = np.random.default_rng(0)
    keys = {(tuple(row[:t]), row[t]) for row in completions.reshape(-1, space.window).tolist() for t in range(2, space.window)}
    table = {key: rng.normal() for key in keys}
    other = {key: rng.normal() for key in keys}
    states = {key[0] for key in keys} | {key[0] + (key[1],) for key in keys}
    potential = {state: 3 * rng.normal() for state in states}
    zero = {}

    def returns(tab, phi):
        per_token = _tree_rewards(completions, 2, tab, phi, discount)
        return evaluation.discounted_returns(
            per_token.reshape(-1, space.window), mask.reshape(-1, space.window), discount
        ).reshape(mask.shape[:2])

    base, shaped, different = returns(table, zero), returns(table, potential), returns(other, zero)
    coverage = rng.uniform(0.1, 1.0, base.shape)
    assert evaluation.epic_distance(base, shaped) < 1e-6
    assert evaluation.epic_distance(base, 2.5 * shaped + 7.0, coverage=coverage) < 1e-6
    assert evaluation.epic_distance(base, different) > 0.1
    assert evaluation.epic_distance(base, -base) == pytest.approx(1.0)
    # the raw per-token comparison is not shaping-invariant
    per_token = _tree_rewards(completions, 2, table, zero, discount)[mask > 0]
    shaped_token = _tree_rewards(completions, 2, table, potential, discount)[mask > 0]
    assert stats.pearsonr(per_token, shaped_token).statistic < 0.9
