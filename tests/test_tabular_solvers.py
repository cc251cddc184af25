"""Exact and sampled tabular solvers checked against independent computations."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs import generative
from envs.tabular import arm_mdp, chain, garnet, gridworld
from mdvi import Regularization, mdvi_greedy_step
from mdvi import tabular as solvers


@pytest.fixture
def small_garnet():
    return garnet(25, 3, 4, discount=0.9, seed=3)


def test_value_iteration_fixed_point_equals_linear_solve(x64, small_garnet):
    model = small_garnet.model()
    vi = solvers.value_iteration(model, 600)
    v_vi = np.asarray(vi.v[-1])
    greedy = solvers.greedy_policy(vi.q[-1])
    v_solve = np.asarray(solvers.policy_evaluation(model, greedy))
    np.testing.assert_allclose(v_vi, v_solve, rtol=0, atol=1e-10)
    # and the linear solve is a fixed point of the Bellman optimality operator
    q = solvers.bellman_optimality(model, jnp.asarray(v_solve))
    np.testing.assert_allclose(np.max(np.asarray(q), -1), v_solve, atol=1e-10)
    np.testing.assert_allclose(solvers.optimal_values(model).v, v_solve, atol=1e-10)


def test_policy_evaluation_matches_numpy(x64, small_garnet):
    rng = np.random.default_rng(0)
    policy = rng.dirichlet(np.ones(3), size=25)
    P, r, g = small_garnet.transitions, small_garnet.rewards, small_garnet.discount
    P_pi = np.einsum("sa,san->sn", policy, P)
    expected = np.linalg.solve(np.eye(25) - g * P_pi, (policy * r).sum(-1))
    for representation in ("dense", "sparse"):
        got = solvers.policy_evaluation(small_garnet.model(representation), jnp.asarray(policy))
        np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_unregularized_mdvi_is_value_iteration_step_for_step(x64, small_garnet):
    model = small_garnet.model()
    reg = Regularization.from_kl_entropy(0.0, 0.0)
    vi = solvers.value_iteration(model, 30)
    state = solvers.mdvi_init(model, reg)
    for k in range(30):
        state = solvers.exact_mdvi_step(model, reg, state)
        # equal up to rounding (jitted scan vs eager steps order operations differently)
        np.testing.assert_allclose(np.asarray(state.q), np.asarray(vi.q[k]), rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("tau, kappa", [(0.05, 0.01), (0.0, 0.05), (0.5, 0.2)])
def test_mdvi_with_entropy_converges_to_the_soft_optimum(x64, tau, kappa):
    mdp = garnet(20, 3, 4, discount=0.8, seed=1)
    model = mdp.model()
    reg = Regularization.from_kl_entropy(tau, kappa)
    soft = solvers.soft_value_iteration(model, kappa, tolerance=1e-13)
    assert float(soft.residual) <= 1e-13
    run = solvers.exact_mdvi(model, reg, 600)
    q_mdvi = np.asarray(run.state.q)
    np.testing.assert_allclose(q_mdvi, np.asarray(soft.q), rtol=0, atol=1e-8)
    log_pi = np.asarray(solvers.mdvi_policy(run.state, reg))
    np.testing.assert_allclose(log_pi, np.asarray(soft.log_policy), atol=1e-8)


def test_soft_vi_is_independent_of_mdvi_and_correct_on_a_bandit(x64):
    # one state, discount 0: q* = r, soft value = kappa log sum exp(r / kappa)
    r = np.array([[1.0, 0.0, -1.0]])
    from envs.tabular import TabularMDP

    bandit = TabularMDP(np.ones((1, 3, 1)), r, 0.0)
    soft = solvers.soft_value_iteration(bandit.model(), 0.5)
    np.testing.assert_allclose(soft.q, r)
    np.testing.assert_allclose(soft.v, 0.5 * np.log(np.exp(r / 0.5).sum()))


def test_policy_form_mdvi_equals_sum_form(x64, small_garnet):
    """The value step <pi_k, q_k - tau log(pi_k/pi_{k-1}) - kappa log pi_k> equals w_k - alpha w_{k-1}."""
    model = small_garnet.model()
    reg = Regularization.from_kl_entropy(0.3, 0.1)
    tau, kappa = reg.kl_weight, reg.entropy_weight
    log_prev = jnp.full((25, 3), -jnp.log(3.0))
    q = jnp.zeros((25, 3))
    log_pi = mdvi_greedy_step(q, log_prev, reg)  # pi_0 from q_0 = 0: uniform
    state = solvers.mdvi_init(model, reg)
    for _ in range(25):
        v = jnp.sum(jnp.exp(log_pi) * (q - tau * (log_pi - log_prev) - kappa * log_pi), -1)
        np.testing.assert_allclose(v, solvers.mdvi_value(state, reg), atol=1e-10)
        q = solvers.bellman_optimality(model, v)
        log_prev, log_pi = log_pi, mdvi_greedy_step(q, log_pi, reg)
        state = solvers.exact_mdvi_step(model, reg, state)
        np.testing.assert_allclose(q, state.q, atol=1e-9)
        np.testing.assert_allclose(log_pi, solvers.mdvi_policy(state, reg), atol=1e-9)


def test_exact_mdvi_alpha_gamma_finds_the_optimal_policy(x64):
    mdp = gridworld(4, slip=0.1, discount=0.9)
    model = mdp.model()
    v_star = solvers.optimal_values(model).v
    reg = Regularization.from_alpha_beta(0.9, float("inf"))
    run = solvers.exact_mdvi(model, reg, 150, v_star=v_star)
    gap = np.asarray(run.gap)
    assert gap[0] > 0.1 and gap[-1] < 1e-9
    assert np.all(np.asarray(run.samples) == 0)


def test_dense_and_sparse_representations_agree(x64, small_garnet):
    reg = Regularization.from_kl_entropy(0.1, 0.05)
    dense = solvers.exact_mdvi(small_garnet.model("dense"), reg, 20)
    sparse = solvers.exact_mdvi(small_garnet.model("sparse"), reg, 20)
    assert small_garnet.model("sparse").dense is None
    np.testing.assert_allclose(dense.state.q, sparse.state.q, rtol=1e-12)


def test_generative_model_draws_follow_the_transition_law(x64):
    mdp = chain(6, slip=0.3)
    model = mdp.model()
    draws = np.asarray(generative.sample_next_states(jax.random.key(0), model, 20000))
    assert draws.shape == (6, 2, 20000)
    for s in range(6):
        for a in range(2):
            freq = np.bincount(draws[s, a], minlength=6) / 20000
            p = mdp.transitions[s, a]
            assert np.all(freq[p == 0] == 0)
            np.testing.assert_allclose(freq, p, atol=5 * np.sqrt(0.25 / 20000))


def test_binary_search_sampler_agrees_with_comparison_sampler(x64):
    # dense rows (support 80 > 64) exercise the searchsorted path
    mdp = garnet(80, 2, 80, discount=0.9, seed=0)
    model = mdp.model()
    draws = np.asarray(generative.sample_next_states(jax.random.key(1), model, 40000))
    freq = np.bincount(draws[3, 1], minlength=80) / 40000
    np.testing.assert_allclose(freq, mdp.transitions[3, 1], atol=5 * np.sqrt(0.05 / 40000))


def test_sampled_mdvi_counts_every_call(x64, small_garnet):
    model = small_garnet.model()
    reg = Regularization.from_alpha_beta(0.9, float("inf"))
    run = solvers.sampled_mdvi(jax.random.key(0), model, reg, 7, 5)
    np.testing.assert_array_equal(np.asarray(run.samples), np.full(7, 25 * 3 * 5))
    assert generative.calls_per_sweep(model, 5) == 375


def test_sampled_mdvi_error_shrinks_with_samples(x64):
    mdp = arm_mdp(0.9, epsilon=0.5)
    model = mdp.model()
    v_star = solvers.optimal_values(model).v
    reg = Regularization.from_alpha_beta(0.9, float("inf"))
    keys = jax.random.split(jax.random.key(42), 200)
    means = []
    for M in (2, 8, 32, 128):
        run = jax.vmap(lambda k, M=M: solvers.sampled_mdvi(k, model, reg, 40, M, v_star=v_star))(keys)
        # error of the final value estimate and of the final policy, averaged over 200 seeds
        v_err = np.max(np.abs(np.asarray(solvers.mdvi_value(run.state, reg)) - np.asarray(v_star)), -1)
        means.append((v_err.mean(), np.asarray(run.gap)[:, -1].mean()))
    v_errors = [m[0] for m in means]
    gaps = [m[1] for m in means]
    assert all(a > b for a, b in zip(v_errors, v_errors[1:])), v_errors
    assert all(a >= b for a, b in zip(gaps, gaps[1:])), gaps
    assert gaps[0] > 0.05 and gaps[-1] < gaps[0] / 4
    # the value error scales like M^{-1/2}: 64x more samples, about 8x less error
    assert 4 < v_errors[0] / v_errors[-1] < 16


def test_vmapped_seeds_equal_separate_runs(x64, small_garnet):
    model = small_garnet.model()
    reg = Regularization.from_kl_entropy(0.2, 0.02)
    v_star = solvers.optimal_values(model).v
    keys = jax.random.split(jax.random.key(7), 5)
    batched = jax.vmap(lambda k: solvers.sampled_mdvi(k, model, reg, 12, 3, v_star=v_star))(keys)
    for i, key in enumerate(keys):
        single = solvers.sampled_mdvi(key, model, reg, 12, 3, v_star=v_star)
        np.testing.assert_allclose(np.asarray(batched.state.q[i]), np.asarray(single.state.q), rtol=1e-12)
        np.testing.assert_allclose(np.asarray(batched.gap[i]), np.asarray(single.gap), rtol=1e-12)


def test_chunked_runs_equal_one_run(x64, small_garnet):
    model = small_garnet.model()
    reg = Regularization.from_alpha_beta(0.9, 5.0)
    key = jax.random.key(3)
    whole = solvers.sampled_mdvi(key, model, reg, 10, 4)
    state = solvers.mdvi_init(model, reg)
    first = solvers.run_mdvi(model, reg, state, 6, start=0, key=key, samples_per_pair=4)
    second = solvers.run_mdvi(model, reg, first.state, 4, start=6, key=key, samples_per_pair=4)
    np.testing.assert_array_equal(np.asarray(whole.state.q), np.asarray(second.state.q))


def test_different_seeds_differ(x64, small_garnet):
    model = small_garnet.model()
    reg = Regularization.from_alpha_beta(0.9, float("inf"))
    a = solvers.sampled_mdvi(jax.random.key(0), model, reg, 3, 2)
    b = solvers.sampled_mdvi(jax.random.key(1), model, reg, 3, 2)
    assert not np.allclose(np.asarray(a.state.q), np.asarray(b.state.q))


def test_kozuno_schedule_orders():
    small = solvers.kozuno_schedule(0.9, 0.5, 10, 2)
    large = solvers.kozuno_schedule(0.99, 0.5, 10, 2)
    assert small.alpha == 0.9
    assert large.num_iterations > 10 * small.num_iterations * 0.9
    ratio = large.samples_per_pair / small.samples_per_pair
    assert 80 < ratio < 150  # H^2 times a log factor
    with pytest.raises(ValueError, match="discount"):
        solvers.kozuno_schedule(1.0, 0.5, 10, 2)


def test_a_vmapped_sweep_over_eight_taus_compiles_once(x64, small_garnet):
    """Regularization is a pytree of traced values: a grid of tau is one compiled program, and
    a second grid of the same size reuses it (no trace, no lowering)."""
    from mdvi.sweep import grid

    model = small_garnet.model()
    v_star = solvers.optimal_values(model).v
    traces = []

    def gaps(tau, model, v_star):
        traces.append(1)  # a Python side effect: runs once per trace
        return solvers.exact_mdvi(model, Regularization.from_kl_entropy(tau, 0.01), 15, v_star=v_star).gap

    sweep = jax.jit(jax.vmap(gaps, in_axes=(0, None, None)))
    lowerings = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/jaxpr_to_mlir_module_duration":
            lowerings.append(event)

    first = grid(tau=[0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0])
    second = grid(tau=[0.03, 0.04, 0.06, 0.07, 0.3, 0.4, 2.0, 3.0])
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        gaps_first = sweep(first.values["tau"], model, v_star)
        lowered_first = len(lowerings)
        gaps_second = sweep(second.values["tau"], model, v_star)
        lowered_second = len(lowerings) - lowered_first
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert len(traces) == 1 and sweep._cache_size() == 1
    assert lowered_first == 1 and lowered_second == 0
    # every grid point is the run with that tau alone (tau = kappa = 0.01 -> alpha = 0.5; tau = 0 -> alpha = 0)
    for grid_, swept in ((first, gaps_first), (second, gaps_second)):
        for i, point in enumerate(grid_.points):
            alone = solvers.exact_mdvi(model, Regularization.from_kl_entropy(point["tau"], 0.01), 15, v_star=v_star)
            np.testing.assert_allclose(np.asarray(swept[i]), np.asarray(alone.gap), rtol=1e-12, atol=1e-14)
