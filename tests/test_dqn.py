"""DQN / M-DQN with and without DVW: losses, weights, equivalences, and learning on a probe."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import rlax

from agents import networks
from agents.dqn import DQNAgent, DQNConfig, config_for, dvw_weights, make_train, scale_loss, td_errors
from agents.replay import replay_sample
from envs.minatar import make
from envs.probe import TwoStepProbe
from mdvi import kl_entropy_to_munchausen, munchausen_target

PROBE = dict(
    total_steps=6200, learning_starts=200, buffer_size=2000, batch_size=32, train_frequency=2,
    target_period=100, learning_rate=1e-3, variance_learning_rate=1e-3, discount=0.9,
    exploration_fraction=0.5, epsilon_end=0.2, eval_episodes=4,
    # log eta must travel from 1 to about log(0.1) within the probe's 3000 updates
    scale_learning_rate=1e-2,
)


def _probe_agent(algorithm, **overrides):
    config = config_for(algorithm, **{**PROBE, **overrides})
    return DQNAgent(config, TwoStepProbe(), networks.mlp_q_network(2, (32, 32), variance_head=config.shared_variance))


def _random_batch(rng, batch=8, actions=4):
    return dict(
        q_tm1=jnp.asarray(rng.normal(size=(batch, actions)), jnp.float32),
        a_tm1=jnp.asarray(rng.integers(actions, size=batch), jnp.int32),
        r_t=jnp.asarray(rng.normal(size=batch), jnp.float32),
        discount_t=jnp.asarray(rng.choice([0.0, 0.99], size=batch), jnp.float32),
        bootstrap_tm1=jnp.asarray(rng.normal(size=(batch, actions)), jnp.float32),
        bootstrap_t=jnp.asarray(rng.normal(size=(batch, actions)), jnp.float32),
    )


def test_dqn_td_errors_are_rlax_q_learning():
    b = _random_batch(np.random.default_rng(0))
    ours = td_errors(**b, munchausen=False)
    theirs = jax.vmap(rlax.q_learning)(b["q_tm1"], b["a_tm1"], b["r_t"], b["discount_t"], b["bootstrap_t"])
    np.testing.assert_allclose(ours, theirs, rtol=1e-6)
    # and by hand
    q = np.asarray(b["q_tm1"])[np.arange(8), np.asarray(b["a_tm1"])]
    target = np.asarray(b["r_t"]) + np.asarray(b["discount_t"]) * np.asarray(b["bootstrap_t"]).max(-1)
    np.testing.assert_allclose(ours, target - q, rtol=1e-5, atol=1e-6)


def test_mdqn_td_errors_by_hand_including_the_clip():
    b = _random_batch(np.random.default_rng(1))
    tau, alpha = kl_entropy_to_munchausen(0.027, 0.003)
    ours = np.asarray(td_errors(**b, munchausen=True, temperature=tau, munchausen_alpha=alpha, log_clip_min=-1.0))
    boot_tm1 = np.asarray(b["bootstrap_tm1"], np.float64)
    boot_t = np.asarray(b["bootstrap_t"], np.float64)
    a = np.asarray(b["a_tm1"])
    for i in range(8):
        logits = boot_tm1[i] / tau
        log_pi = logits - (logits.max() + math.log(np.exp(logits - logits.max()).sum()))
        bonus = alpha * max(tau * log_pi[a[i]], -1.0)
        nxt = boot_t[i] / tau
        pi_next = np.exp(nxt - nxt.max()) / np.exp(nxt - nxt.max()).sum()
        log_pi_next = np.log(pi_next)
        soft = np.sum(pi_next * (boot_t[i] - tau * log_pi_next))
        y = float(b["r_t"][i]) + bonus + float(b["discount_t"][i]) * soft
        assert ours[i] == pytest.approx(y - float(b["q_tm1"][i, a[i]]), rel=1e-4, abs=1e-4)
    # at least one bonus in this batch is clipped (the test exercises the clip)
    log_pis = jax.nn.log_softmax(b["bootstrap_tm1"] / tau)[jnp.arange(8), b["a_tm1"]]
    assert np.any(np.asarray(tau * log_pis) < -1.0)


def test_dvw_weights_are_floored_nonnegative_and_carry_no_gradient():
    variance = jnp.array([0.1, 1.0, 10.0, 100.0, 1e4])
    w = dvw_weights(jnp.log(2.0), variance, 0.1)
    assert np.all(np.asarray(w) >= 0.1)
    np.testing.assert_allclose(w, np.maximum(2.0 / np.asarray(variance), 0.1), rtol=1e-6)
    grads = jax.grad(lambda s, v: dvw_weights(s, v, 0.1).sum(), argnums=(0, 1))(jnp.log(2.0), variance)
    assert float(grads[0]) == 0.0 and np.all(np.asarray(grads[1]) == 0.0)


def test_fitted_scale_normalises_the_mean_weight_to_one():
    rng = np.random.default_rng(2)
    variance = jnp.asarray(np.exp(rng.normal(size=256)) + 0.1, jnp.float32)
    log_scale = jnp.asarray(1.0)
    opt = optax.adam(1e-2)

    def step(carry, _):
        log_scale, state = carry
        u, state = opt.update(jax.grad(scale_loss)(log_scale, variance), state)
        return (optax.apply_updates(log_scale, u), state), None

    (log_scale, _), _ = jax.lax.scan(step, (log_scale, opt.init(log_scale)), None, length=3000)
    assert float(jnp.mean(jnp.exp(log_scale) / variance)) == pytest.approx(1.0, abs=1e-3)
    w = dvw_weights(log_scale, variance, 0.1)
    assert abs(float(w.mean()) - 1.0) < 0.1


def test_plain_dqn_update_is_an_adam_step_on_the_rlax_loss():
    """dvw off and munchausen off: the agent's update is exactly DQN's."""
    agent = _probe_agent("dqn")
    state = jax.jit(lambda k: agent.warmup(agent.init(k)))(jax.random.key(0))
    key = jax.random.key(1)
    new_state, stats = jax.jit(agent.update)(state, key)

    batch = replay_sample(state.replay, key, agent.config.batch_size)
    batch = batch._replace(obs=batch.obs.astype(jnp.float32), next_obs=batch.next_obs.astype(jnp.float32))
    q_params = state.params.trained["q"]
    target_params = state.params.frozen["target"]
    discount = agent.config.discount * (1.0 - batch.terminated.astype(jnp.float32))

    def loss(p):
        td = jax.vmap(rlax.q_learning)(
            agent.network.apply(p, batch.obs), batch.action, batch.reward, discount,
            agent.network.apply(target_params, batch.next_obs),
        )
        return jnp.mean(rlax.l2_loss(td))

    value, grads = jax.value_and_grad(loss)(q_params)
    opt = optax.adam(agent.config.learning_rate, eps=agent.config.adam_eps)
    updates, _ = opt.update(grads, opt.init(q_params))
    expected = optax.apply_updates(q_params, updates)
    assert float(stats.loss) == pytest.approx(float(value), rel=1e-6)
    got = new_state.params.trained["q"]
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert float(stats.weight_mean) == 1.0


def test_network_width_must_match_the_variance_setting():
    config = config_for("mdqn+dvw-shared", **PROBE)
    with pytest.raises(ValueError, match="needs 4"):
        DQNAgent(config, TwoStepProbe(), networks.mlp_q_network(2, (32, 32)))
    with pytest.raises(ValueError, match="needs 2"):
        DQNAgent(config_for("mdqn", **PROBE), TwoStepProbe(), networks.mlp_q_network(2, (32,), variance_head=True))


def test_shared_variance_head_does_not_touch_the_q_function():
    """With dvw_network="shared" the variance loss moves only the variance head."""
    agent = _probe_agent("mdqn+dvw-shared")
    state = jax.jit(lambda k: agent.warmup(agent.init(k)))(jax.random.key(0))
    obs = jnp.eye(2, dtype=jnp.float32)
    params = state.params.trained["q"]

    def variance_output(p):
        return agent.network.apply(p, obs)[:, 2:].sum()

    grads = jax.grad(variance_output)(params)
    for name, leaves in grads.items():
        moved = any(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(leaves))
        assert moved == (name.endswith("variance_head")), name
    assert agent.q_values(state.params, obs).shape == (2, 2)


def test_target_refresh_rotates_the_frozen_networks():
    agent = _probe_agent("mdqn+dvw")
    state = agent.init(jax.random.key(0))
    trained = jax.tree.map(lambda x: x + 1.0, state.params.trained)  # distinguishable
    params = agent.refresh_targets(state.params._replace(trained=trained))
    assert params.frozen.names == ("target", "previous_target", "frozen_variance")

    def same(a, b):
        return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))

    assert same(params.frozen["target"], trained["q"])
    assert same(params.frozen["previous_target"], state.params.frozen["target"])
    assert same(params.frozen["frozen_variance"], trained["variance"])
    # the three sources differ, so the test can tell a wrong rotation apart
    assert not same(trained["q"], trained["variance"]) and not same(trained["q"], state.params.frozen["target"])


def _probe_fixed_point(config):
    """Exact values of the probe under the agent's target (DQN: Q*, M-DQN: its fixed point)."""
    rewards, next_state, terminal = TwoStepProbe().transitions()
    q = np.zeros((2, 2))
    if config.munchausen:
        tau, alpha = kl_entropy_to_munchausen(config.kl_weight, config.entropy_weight)
    for _ in range(500):
        new = np.zeros_like(q)
        for s in range(2):
            for a in range(2):
                discount = 0.0 if terminal[s, a] else config.discount
                q_next = q[next_state[s, a]]
                if config.munchausen:
                    new[s, a] = float(munchausen_target(
                        jnp.asarray(q[s]), jnp.asarray(a), jnp.asarray(rewards[s, a]), jnp.asarray(discount),
                        jnp.asarray(q_next), tau, alpha, config.log_clip_min,
                    ))
                else:
                    new[s, a] = rewards[s, a] + discount * q_next.max()
        q = new
    return q


@pytest.mark.parametrize("algorithm", ["dqn", "mdqn", "dqn+dvw", "mdqn+dvw", "mdqn+dvw-shared"])
def test_every_variant_learns_the_probe_values(algorithm):
    agent = _probe_agent(algorithm)
    train = make_train(agent.config, agent.env, agent.network, num_chunks=2)
    state, stats, returns = jax.jit(train)(jax.random.key(3))
    obs = jnp.eye(2, dtype=jnp.float32)
    learned = np.asarray(agent.q_values(state.params, obs))
    expected = _probe_fixed_point(agent.config)
    if agent.config.munchausen:
        assert expected[1, 1] < -0.8  # the clipped Munchausen bonus shapes the fixed point
    np.testing.assert_allclose(learned, expected, atol=0.08, err_msg=algorithm)
    # the greedy policy is optimal: return 0.5 + 1 per episode
    np.testing.assert_allclose(np.asarray(returns[-1]), 1.5)
    if agent.config.dvw:
        assert abs(float(stats.weight_mean[-1]) - 1.0) < 0.35
        assert float(stats.weight_min.min()) >= agent.config.weight_min - 1e-7


def test_vmapped_seeds_equal_separate_runs():
    config = config_for("mdqn+dvw", total_steps=600, learning_starts=200, buffer_size=500,
                        target_period=100, eval_episodes=2)
    env = make("breakout")
    train = jax.jit(make_train(config, env, num_chunks=2))
    keys = jax.random.split(jax.random.key(0), 2)
    batched = jax.jit(jax.vmap(make_train(config, env, num_chunks=2)))(keys)
    for i in range(2):
        single = train(keys[i])
        for a, b in zip(jax.tree.leaves(single[0].params), jax.tree.leaves(batched[0].params)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b[i]), rtol=2e-5, atol=1e-6)
        np.testing.assert_array_equal(np.asarray(single[0].replay.action), np.asarray(batched[0].replay.action[i]))
    # two seeds are different runs
    assert not np.array_equal(np.asarray(batched[0].replay.action[0]), np.asarray(batched[0].replay.action[1]))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(discount=1.0), "discount"),
        (dict(batch_size=64, buffer_size=32), "exceeds buffer_size"),
        (dict(target_period=1001), "multiple of train_frequency"),
        (dict(total_steps=0), "total_steps"),
        (dict(algorithm="mdqn", kl_weight=0.0, entropy_weight=0.0), "kl_weight \\+ entropy_weight > 0"),
    ],
)
def test_bad_configs_are_rejected(overrides, message):
    with pytest.raises(ValueError, match=message):
        DQNConfig(**overrides)


def test_unknown_algorithm_is_named():
    with pytest.raises(ValueError, match="unknown algorithm 'ddqn'"):
        config_for("ddqn")


def test_one_seed_runs_unbatched_with_the_values_of_a_vmap_over_one_seed():
    # the CLI's single-seed path (experiments.distributed.map_seeds) drops the batch axis
    from experiments.distributed import map_seeds

    config = config_for("mdqn+dvw", total_steps=600, learning_starts=200, buffer_size=500,
                        target_period=100, eval_episodes=2)
    train = make_train(config, make("breakout"), num_chunks=2)
    keys = jax.random.split(jax.random.key(3), 1)
    unbatched = jax.jit(map_seeds(train, 1))(keys)
    batched = jax.jit(jax.vmap(train))(keys)
    assert jax.tree.structure(unbatched) == jax.tree.structure(batched)
    for a, b in zip(jax.tree.leaves(unbatched[0].params), jax.tree.leaves(batched[0].params)):
        assert a.shape == b.shape and a.shape[0] == 1
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(unbatched[0].replay.action), np.asarray(batched[0].replay.action))
    # a shared (None) argument stays whole; per-seed ones lose and regain the seed axis
    shifted = map_seeds(lambda x, c: x + c, 1, in_axes=(0, None))(jnp.ones((1, 3)), jnp.arange(3.0))
    np.testing.assert_array_equal(np.asarray(shifted), [[1.0, 2.0, 3.0]])
