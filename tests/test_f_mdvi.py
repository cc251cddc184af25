"""f-regularized MDVI: the policy form of the recursion, Tsallis value iteration against an
independent sparse solver, LS-MDVI with a divergence, and errors for misuse."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs.generative import Sampling
from envs.linear import one_hot
from envs.tabular import garnet
from mdvi import Regularization
from mdvi import linear as lin
from mdvi import tabular as solvers
from mdvi.loop import MDVIState, PolicyState


@pytest.fixture
def mdp():
    return garnet(12, 4, 3, discount=0.9, seed=5)


def _assert_states_agree(summed: MDVIState, policy: PolicyState, reg, atol=1e-10):
    np.testing.assert_allclose(np.asarray(policy.q), np.asarray(summed.q), rtol=0, atol=atol)
    np.testing.assert_allclose(
        np.asarray(solvers.mdvi_policy(policy, reg)), np.asarray(solvers.mdvi_policy(summed, reg)), rtol=0, atol=atol
    )
    np.testing.assert_allclose(
        np.asarray(solvers.mdvi_value(policy, reg)), np.asarray(solvers.mdvi_value(summed, reg)), rtol=0, atol=atol
    )


@pytest.mark.parametrize("tau, kappa", [(0.05, 0.01), (0.5, 0.0), (0.02, 0.2)])
def test_kl_policy_form_equals_sum_form_iterate_for_iterate(x64, mdp, tau, kappa):
    """Acceptance: the general recursion with KL is MDVI's sum form, to 1e-10, at every iterate."""
    model = mdp.model()
    reg = Regularization.from_kl_entropy(tau, kappa)
    summed = solvers.mdvi_init(model, reg)
    policy = solvers.mdvi_init(model, reg, "kl", form="policy")
    assert isinstance(summed, MDVIState) and isinstance(policy, PolicyState)
    _assert_states_agree(summed, policy, reg)
    for _ in range(60):
        summed = solvers.exact_mdvi_step(model, reg, summed)
        policy = solvers.exact_mdvi_step(model, reg, policy)
        _assert_states_agree(summed, policy, reg)
    # some state's policy is far from greedy (the test would see a wrong reference)
    assert float(jnp.min(jnp.max(jnp.exp(policy.log_policy), -1))) < 0.9
    # jitted runs: the same gaps per iterate, and the same sampled iterates given the same draws
    v_star = solvers.optimal_values(model).v
    a = solvers.exact_mdvi(model, reg, 30, v_star=v_star)
    b = solvers.exact_mdvi(model, reg, 30, v_star=v_star, form="policy")
    np.testing.assert_allclose(np.asarray(b.gap), np.asarray(a.gap), rtol=0, atol=1e-10)
    key = jax.random.key(2)
    a = solvers.sampled_mdvi(key, model, reg, 20, 3)
    b = solvers.sampled_mdvi(key, model, reg, 20, 3, form="policy")
    _assert_states_agree(a.state, b.state, reg)


def test_kl_policy_form_of_ls_mdvi_equals_its_sum_form(x64):
    small = garnet(6, 3, 3, discount=0.9, seed=1)
    model = lin.linear_model(one_hot(small))
    allocation = lin.allocate(model, lin.design(model), 4 * 18)
    reg = Regularization.from_kl_entropy(0.2, 0.05)
    key = jax.random.key(11)
    a = lin.ls_mdvi(key, model, reg, allocation, 25, sampling=Sampling("iid", 4))
    b = lin.ls_mdvi(key, model, reg, allocation, 25, sampling=Sampling("iid", 4), form="policy")
    _assert_states_agree(a.state, b.state, reg)


# ---------------------------------------------------------------------------------------------
# Tsallis value iteration against an independent solver
# ---------------------------------------------------------------------------------------------


def _entmax_numpy(z: np.ndarray, alpha: float) -> np.ndarray:
    """Sort-based alpha-entmax of one row, written here independently of the library.

    ``alpha = 2``: sparsemax, ``p = (z - thr)_+`` with ``sum p = 1``.
    ``alpha = 1.5``: ``p = ((z - thr) / 2)_+^2``... in the scaling used below, ``p = (z - thr)_+^2``.
    """
    zs = np.sort(z)[::-1]
    k = np.arange(1, len(z) + 1)
    if alpha == 2.0:
        thresholds = (np.cumsum(zs) - 1.0) / k
        support = zs > thresholds
    else:  # sum_{i <= k} (z_i - thr)^2 = 1, the smaller root
        s1, s2 = np.cumsum(zs), np.cumsum(zs**2)
        disc = np.maximum(s1**2 - k * (s2 - 1.0), 0.0)
        thresholds = (s1 - np.sqrt(disc)) / k
        support = (zs > thresholds) & (s1**2 - k * (s2 - 1.0) >= 0)
    kk = np.max(np.nonzero(support)[0])
    thr = thresholds[kk]
    return np.maximum(z - thr, 0.0) ** (1.0 if alpha == 2.0 else 2.0)


def _tsallis_policy_and_value(q: np.ndarray, t: float, alpha: float):
    """argmax / max of ``<p, q> - t sum_a f(p_a)`` with ``f(u) = (u^a - 1 - a (u - 1)) / (a (a - 1))``.

    First-order condition ``q_a - t f'(p_a) = lambda`` with ``f'(u) = (u^(a-1) - 1) / (a - 1)``:
    alpha = 2, ``p = sparsemax(q / t)``; alpha = 1.5, ``sqrt p = ((q - lambda) / t) / 2 + 1``, so
    ``p = (z - thr)_+^2`` with ``z = q / (2 t)``.
    """
    z = q / t if alpha == 2.0 else q / (2.0 * t)
    p = np.stack([_entmax_numpy(row, alpha) for row in z])
    f = (p**alpha - 1.0 - alpha * (p - 1.0)) / (alpha * (alpha - 1.0))
    return p, np.sum(p * q, -1) - t * np.sum(f, -1)


def _tsallis_value_iteration(mdp, t: float, alpha: float, iterations: int):
    P, r, g = mdp.transitions, mdp.rewards, mdp.discount
    q = np.zeros_like(r)
    for _ in range(iterations):
        _, v = _tsallis_policy_and_value(q, t, alpha)
        q = r + g * np.einsum("san,n->sa", P, v)
    return q, _tsallis_policy_and_value(q, t, alpha)


@pytest.mark.parametrize("alpha", [2.0, 1.5])
def test_tsallis_value_iteration_matches_an_independent_sparse_solver(x64, mdp, alpha):
    """Acceptance: alpha-divergence VI (unit reference, MDVI alpha = 0) to 1e-8, sparse optimum."""
    t = 0.1
    reg = Regularization.from_alpha_beta(0.0, 1.0 / t)
    K = 400  # 0.9^400 ~ 5e-19: the fixed point to rounding
    run = solvers.exact_mdvi(mdp.model(), reg, K, divergence=f"alpha:{alpha:g}")
    q_ref, (p_ref, v_ref) = _tsallis_value_iteration(mdp, t, alpha, K)
    np.testing.assert_allclose(np.asarray(run.state.q), q_ref, rtol=0, atol=1e-8)
    p = np.exp(np.asarray(solvers.mdvi_policy(run.state, reg)))
    np.testing.assert_allclose(p, p_ref, rtol=0, atol=1e-8)
    # a fixed point: one more exact step moves nothing; its value is the independent one
    after = solvers.exact_mdvi_step(mdp.model(), reg, run.state)
    np.testing.assert_allclose(np.asarray(after.q), np.asarray(run.state.q), rtol=0, atol=1e-10)
    np.testing.assert_allclose(np.asarray(solvers.mdvi_value(run.state, reg)), v_ref, rtol=0, atol=1e-8)
    # sparse and not greedy: exact zeros in some states, several actions in others
    support = (p > 0).sum(-1)
    assert np.any(support < mdp.rewards.shape[1]) and np.any(support > 1), support
    np.testing.assert_array_equal(p == 0, p_ref == 0)


def test_policy_form_with_a_sparse_divergence_only_shrinks_the_support(x64, mdp):
    reg = Regularization.from_kl_entropy(0.05, 0.05)
    state = solvers.mdvi_init(mdp.model(), reg, "alpha:1.5")
    previous = np.ones(mdp.rewards.shape, bool)
    for _ in range(30):
        state = solvers.exact_mdvi_step(mdp.model(), reg, state)
        support = np.asarray(state.log_policy) > -np.inf
        assert not np.any(support & ~previous)
        previous = support
    assert np.any(~previous)  # some action was dropped for good
    np.testing.assert_allclose(np.exp(np.asarray(state.log_policy)).sum(-1), 1.0, atol=1e-12)


def test_misuse_is_named(mdp):
    reg = Regularization.from_kl_entropy(0.05, 0.01)
    with pytest.raises(ValueError, match="form='sum' holds only for the KL"):
        solvers.exact_mdvi(mdp.model(), reg, 3, divergence="alpha:1.5", form="sum")
    with pytest.raises(ValueError, match="form must be one of"):
        solvers.exact_mdvi(mdp.model(), reg, 3, form="both")


# ---------------------------------------------------------------------------------------------
# f-regularized M-DQN on the probe
# ---------------------------------------------------------------------------------------------


def _sparsemax_target(q_tm1, a, r, discount, q_t, tau, munchausen_alpha, l0):
    """M-DQN's target with alpha = 2 (chi2 / 2, unit reference), written by hand: policy
    ``sparsemax(q / tau)``, bootstrap ``<p, q> - tau sum_a (p_a - 1)^2 / 2``, bonus ``tau (p_a - 1)``."""
    p_tm1 = _entmax_numpy(q_tm1 / tau, 2.0)
    p_t = _entmax_numpy(q_t / tau, 2.0)
    value = np.sum(p_t * q_t) - tau * np.sum((p_t - 1.0) ** 2) / 2.0
    return r + munchausen_alpha * np.clip(tau * (p_tm1[a] - 1.0), l0, 0.0) + discount * value


def test_munchausen_target_with_a_divergence_matches_the_hand_computation():
    from mdvi import munchausen_target

    rng = np.random.default_rng(0)
    for _ in range(20):
        q_tm1, q_t = rng.normal(size=4), rng.normal(size=4)
        a, r, discount = int(rng.integers(4)), float(rng.normal()), 0.9
        got = munchausen_target(
            jnp.asarray(q_tm1),
            jnp.asarray(a),
            jnp.asarray(r),
            jnp.asarray(discount),
            jnp.asarray(q_t),
            0.3,
            0.9,
            -1.0,
            divergence="alpha:2",
        )
        expected = _sparsemax_target(q_tm1, a, r, discount, q_t, 0.3, 0.9, -1.0)
        np.testing.assert_allclose(float(got), expected, rtol=1e-5, atol=1e-5)
    # KL by name is the default target, bit for bit
    args = tuple(jnp.asarray(x) for x in (q_tm1, a, r, discount, q_t))
    assert float(munchausen_target(*args, 0.3, 0.9, -1.0)) == float(munchausen_target(*args, 0.3, 0.9, -1.0, divergence="kl"))


def test_f_regularized_mdqn_learns_the_probe_values():
    """Acceptance: M-DQN with the alpha = 2 (sparsemax) regularizer learns its exact probe values."""
    from agents import networks
    from agents.dqn import DQNAgent, config_for, make_train
    from envs.probe import TwoStepProbe
    from mdvi import kl_entropy_to_munchausen

    probe = dict(
        total_steps=6200, learning_starts=200, buffer_size=2000, batch_size=32, train_frequency=2,
        target_period=100, learning_rate=1e-3, discount=0.9, exploration_fraction=0.5, epsilon_end=0.2,
        eval_episodes=4, kl_weight=0.27, entropy_weight=0.03,
    )  # fmt: skip
    config = config_for("mdqn", divergence="alpha:2", **probe)
    agent = DQNAgent(config, TwoStepProbe(), networks.mlp_q_network(2, (32, 32)))
    state, _, returns = jax.jit(make_train(agent.config, agent.env, agent.network, num_chunks=2))(jax.random.key(3))
    learned = np.asarray(agent.q_values(state.params, jnp.eye(2, dtype=jnp.float32)))
    # the exact fixed point of the hand-written target
    rewards, next_state, terminal = TwoStepProbe().transitions()
    tau, alpha = kl_entropy_to_munchausen(config.kl_weight, config.entropy_weight)
    q = np.zeros((2, 2))
    for _ in range(300):
        q = np.array([[
            _sparsemax_target(q[s], a, rewards[s, a], 0.0 if terminal[s, a] else config.discount,
                              q[next_state[s, a]], tau, alpha, config.log_clip_min)
            for a in range(2)] for s in range(2)])  # fmt: skip
    kl_config = config_for("mdqn", **probe)
    assert kl_config.divergence == "kl"
    # the regularizer matters: the fixed point differs from the KL one's bonus structure
    assert q[1, 1] < -0.2 and abs(q[0, 0] - q[0, 1]) > 0.1
    np.testing.assert_allclose(learned, q, atol=0.08)
    np.testing.assert_allclose(np.asarray(returns[-1]), 1.5)
