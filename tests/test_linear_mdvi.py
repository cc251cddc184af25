"""LS-MDVI and VWLS-MDVI: equal to tabular MDVI where theory says so, exact call accounting,
the multinomial-count sampler's law, vmap over seeds."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs import generative
from envs.generative import Sampling
from envs.linear import LinearMDP, family_f2, low_rank_mixture, one_hot
from envs.tabular import chain, garnet
from mdvi import Regularization
from mdvi import linear as lin
from mdvi import tabular as solvers

HARD_MAX = float("inf")


@pytest.fixture
def small_garnet():
    return garnet(6, 3, 3, discount=0.9, seed=1)


def test_one_hot_ls_mdvi_equals_tabular_sampled_mdvi_given_the_same_samples(x64, small_garnet):
    """Acceptance: one-hot features, the same draws -> the same iterates as tabular sampled MDVI."""
    model = lin.linear_model(one_hot(small_garnet))
    M = 4
    design = lin.design(model)
    allocation = lin.allocate(model, design, M * 18)
    np.testing.assert_array_equal(np.asarray(allocation.draws), np.full(18, M))
    reg = Regularization.from_kl_entropy(0.2, 0.05)  # alpha = 0.8, beta = 4: soft values, KL
    key = jax.random.key(11)
    linear = lin.ls_mdvi(key, model, reg, allocation, 25, sampling=Sampling("iid", M))
    tabular = solvers.sampled_mdvi(key, small_garnet.model(), reg, 25, M)
    np.testing.assert_allclose(np.asarray(linear.state.s), np.asarray(tabular.state.s), rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(np.asarray(linear.state.w), np.asarray(tabular.state.w), rtol=1e-11, atol=1e-11)
    np.testing.assert_array_equal(np.asarray(linear.samples), np.asarray(tabular.samples))
    exact = solvers.exact_mdvi(small_garnet.model(), reg, 25)
    assert not np.allclose(np.asarray(tabular.state.q), np.asarray(exact.state.q))  # the samples matter


def test_exact_ls_and_vwls_reproduce_exact_mdvi(x64):
    """Acceptance: regression on expectations (infinitely many samples) is exact MDVI."""
    mdp = family_f2(16, 0.5)
    model = lin.linear_model(mdp)
    reg = Regularization.from_alpha_beta(mdp.discount, HARD_MAX)
    exact = solvers.exact_mdvi(model.tabular, reg, 40)
    allocation = lin.allocate(model, lin.design(model), 100)
    ls = lin.ls_mdvi(None, model, reg, allocation, 40)
    vwls = lin.vwls_mdvi(None, model, reg, allocation, allocation, 100, lin.VWLSPhases(40, 8))
    for run in (ls, vwls):
        np.testing.assert_allclose(np.asarray(run.state.q), np.asarray(exact.state.q), rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(np.asarray(run.state.s), np.asarray(exact.state.s), rtol=1e-10, atol=1e-9)
    assert int(np.sum(ls.samples)) == 0 and int(vwls.total_samples) == 0
    # the exact variance fit recovers Var_P(v_hat) of the phase-1 value, and weights by it
    phase1 = solvers.exact_mdvi(model.tabular, reg, 8)
    values = np.asarray(solvers.mdvi_value(phase1.state, reg))
    P = mdp.transitions
    variance = np.maximum((P * values**2).sum(-1) - (P @ values) ** 2, 0)
    np.testing.assert_allclose(np.asarray(vwls.fit.variance), variance, atol=1e-8)
    np.testing.assert_allclose(np.asarray(vwls.fit.weights), 1 / (variance + 16), rtol=1e-8)
    assert float(vwls.fit.design_g_over_d) <= 1 + 1e-3


def test_exact_ls_mdvi_with_entropy_and_rank_deficient_features(x64):
    """Regression on expectations is exact MDVI also with beta < inf, and with features of rank 3
    in R^4 (designed and regressed in their column space, no ridge)."""
    mdp = low_rank_mixture(12, 3, 3, branching=4, seed=5)
    phi = np.concatenate([mdp.features, mdp.features[..., :1]], axis=-1)  # a repeated column
    mu = np.concatenate([mdp.factors, np.zeros((1, 12))])
    deficient = LinearMDP(phi, mu, np.append(mdp.reward_params, 0.0), mdp.discount)
    model = lin.linear_model(deficient)
    assert model.features.shape[-1] == 3
    reg = Regularization.from_alpha_beta(0.9, 20.0)
    run = lin.ls_mdvi(None, model, reg, lin.allocate(model, lin.design(model), 50), 30)
    exact = solvers.exact_mdvi(model.tabular, reg, 30)
    np.testing.assert_allclose(np.asarray(run.state.q), np.asarray(exact.state.q), atol=1e-10)
    np.testing.assert_allclose(np.asarray(run.state.w), np.asarray(exact.state.w), atol=1e-10)


def test_multinomial_counts_follow_the_multinomial_law(x64):
    mdp = garnet(5, 2, 4, discount=0.9, seed=0)
    model = mdp.model()
    states, actions = generative.all_pairs(model)
    draws = jnp.array([0, 1, 7, 40, 1000, 3, 12, 5, 9, 2])
    keys = jax.random.split(jax.random.key(0), 20000)
    counts = np.asarray(jax.vmap(lambda k: generative.successor_counts(k, model, states, actions, draws))(keys))
    assert np.all(counts.sum(-1) == np.asarray(draws)[None])
    probs = np.asarray(model.next_probs)[np.asarray(states), np.asarray(actions)]
    n = np.asarray(draws, float)[:, None]
    assert np.all(np.abs(counts.mean(0) - n * probs) <= 6 * np.sqrt(n * 0.25 / 20000) + 1e-12)
    expected_var = n * probs * (1 - probs)
    # sample variance of 20000 counts: relative s.e. about sqrt((1 / var + 2) / 20000)
    tolerance = 5 * expected_var * np.sqrt((1 / np.maximum(expected_var, 1e-12) + 2) / 20000) + 1e-12
    assert np.all(np.abs(counts.var(0) - expected_var) <= tolerance)
    # covariance of two successors of one pair: -n p_i p_j
    pair = 4
    cov = np.cov(counts[:, pair, 0], counts[:, pair, 1])[0, 1]
    assert cov == pytest.approx(-1000 * probs[pair, 0] * probs[pair, 1], rel=0.08)


def test_iid_and_multinomial_sample_means_agree_in_distribution(x64):
    mdp = chain(6, slip=0.3)
    model = mdp.model()
    values = jnp.arange(6.0) ** 2
    states, actions = jnp.array([0, 2, 5]), jnp.array([1, 0, 1])
    draws = jnp.array([3, 10, 25])
    keys = jax.random.split(jax.random.key(1), 20000)

    def sample_means(sampling):
        return np.asarray(
            jax.vmap(lambda k: generative.sampled_means_at(k, model, states, actions, draws, values, sampling))(keys)
        )

    means = {sampler: sample_means(Sampling(sampler, 25)) for sampler in ("iid", "multinomial")}
    exact = np.asarray(solvers.expected_next(model, values))[np.asarray(states), np.asarray(actions)]
    for sampler, m in means.items():
        np.testing.assert_allclose(m.mean(0), exact, rtol=0.02, err_msg=sampler)
    np.testing.assert_allclose(means["iid"].var(0), means["multinomial"].var(0), rtol=0.06)


def test_iid_draws_at_pairs_are_the_tabular_draws(x64, small_garnet):
    model = small_garnet.model()
    key = jax.random.key(5)
    states, actions = generative.all_pairs(model)
    at_pairs = generative.sample_next_states_at(key, model, states, actions, 7)
    np.testing.assert_array_equal(np.asarray(at_pairs).reshape(6, 3, 7), np.asarray(generative.sample_next_states(key, model, 7)))


@pytest.fixture(scope="module")
def f2_runs():
    """VWLS-MDVI on F2 (H = 8) for two seeds: batched (recording), single, record-free.

    The iid sampler keeps compilation cheap; the multinomial path is checked separately.
    """
    with jax.enable_x64(True):
        mdp = family_f2(8, 0.5)
        model = lin.linear_model(mdp)
        reg = Regularization.from_alpha_beta(mdp.discount, HARD_MAX)
        design = lin.design(model)
        M, K, K1 = 60, 12, 3
        phase1 = lin.allocate(model, design, M)
        variance = lin.allocate(model, design, 2 * M)
        keys = jax.random.split(jax.random.key(3), 2)
        options = dict(sampling=Sampling("iid", 2 * M + 6))
        phases = lin.VWLSPhases(K, K1)
        batched = jax.vmap(lambda k: lin.vwls_mdvi(k, model, reg, phase1, variance, M, phases, **options))(keys)
        single = lin.vwls_mdvi(keys[1], model, reg, phase1, variance, M, phases, **options)
        free = lin.iterate_vwls_mdvi(keys[1], model, reg, phase1, variance, M, phases, **options)
        return dict(design=design, M=M, K=K, K1=K1, phase1=phase1, variance=variance, batched=batched, single=single, free=free)


def test_call_accounting_is_exact(x64, f2_runs):
    r = f2_runs
    design, M, K, K1 = r["design"], r["M"], r["K"], r["K1"]
    expected_phase1 = int(np.sum(np.ceil(design.weights[design.support] * M * (1 - 1e-12))))
    assert int(r["phase1"].calls) == expected_phase1 >= M
    run = r["single"]
    rho = np.asarray(run.fit.design)
    phase2 = int(np.where(rho > 0, np.maximum(np.ceil(rho * M * (1 - 1e-12)), 1), 0).sum())
    expected = K1 * expected_phase1 + int(r["variance"].calls) + (K - K1) * phase2
    assert int(run.total_samples) == expected
    np.testing.assert_array_equal(np.asarray(run.samples), [expected_phase1] * K1 + [phase2] * (K - K1))
    assert int(r["free"].total_samples) == expected


def test_record_free_loop_and_vmap_give_the_same_iterates(x64, f2_runs):
    single, free, batched = f2_runs["single"], f2_runs["free"], f2_runs["batched"]
    np.testing.assert_allclose(np.asarray(free.state.s), np.asarray(single.state.s), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.asarray(batched.state.s[1]), np.asarray(single.state.s), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(np.asarray(batched.fit.design[1]), np.asarray(single.fit.design), atol=1e-10)
    assert not np.allclose(np.asarray(batched.state.s[0]), np.asarray(batched.state.s[1]))


def test_oracle_weights_and_the_variance_estimate(x64):
    mdp = family_f2(16, 0.5)
    model = lin.linear_model(mdp)
    v_star = solvers.optimal_values(model.tabular).v
    P, v = mdp.transitions, np.asarray(v_star)
    variance = (P * v**2).sum(-1) - (P @ v) ** 2
    np.testing.assert_allclose(np.asarray(lin.oracle_weights(model, v_star)), 1 / (np.maximum(variance, 0) + 16), rtol=1e-10)
    # with many draws the sampled variance fit approaches Var_P(v)
    allocation = lin.allocate(model, lin.design(model), 10**7)
    fit_variance = jax.jit(lin.fit_variance_weights, static_argnums=4)
    fit = fit_variance(jax.random.key(0), model, v_star, allocation, lin.VarianceFitSettings(16.0))
    np.testing.assert_allclose(np.asarray(fit.variance), np.maximum(variance, 0), atol=0.05 * variance.max())
    assert float(fit.design_g_over_d) <= 1 + 1e-3
    # the weighted design moves mass toward the low-variance decision state s0
    unweighted = lin.design(model).weights.reshape(4, 4)
    weighted = np.asarray(fit.design).reshape(4, 4)
    assert weighted[0].sum() > unweighted[0].sum()


def test_sampled_ls_mdvi_error_shrinks_with_samples(x64):
    mdp = family_f2(8, 0.5)
    model = lin.linear_model(mdp)
    reg = Regularization.from_alpha_beta(mdp.discount, HARD_MAX)
    v_star = solvers.optimal_values(model.tabular).v
    design = lin.design(model)
    keys = jax.random.split(jax.random.key(2), 100)
    K = math.ceil(2 * 8 * math.log(8))
    init = solvers.mdvi_init(model.tabular, reg)
    batch = jax.jit(jax.vmap(lambda k, a: lin.iterate_ls_mdvi(model, reg, init, a, K, key=k)[0], (0, None)))
    errors = []
    for M in (100, 1600):
        states = batch(keys, lin.allocate(model, design, M))
        v = np.asarray(solvers.mdvi_value(states, reg))
        errors.append(np.abs(v - np.asarray(v_star)).max(-1).mean())
    # 16x the samples: about 4x less value error
    assert 2.5 < errors[0] / errors[1] < 6.5, errors


def test_bad_arguments_are_rejected(x64):
    model = lin.linear_model(family_f2(8, 0.5))
    reg = Regularization.from_alpha_beta(0.875, HARD_MAX)
    design = lin.design(model)
    allocation = lin.allocate(model, design, 100)
    with pytest.raises(ValueError, match="max_draws"):
        lin.ls_mdvi(jax.random.key(0), model, reg, allocation, 3, sampling=Sampling("iid"))
    with pytest.raises(ValueError, match="unknown sampler"):
        Sampling("bootstrap")
    with pytest.raises(ValueError, match="samples_per_iteration"):
        lin.allocate(model, design, 0)
    with pytest.raises(ValueError, match="pad_to"):
        lin.allocate(model, design, 10, pad_to=2)
    with pytest.raises(ValueError, match="phase1_iterations"):
        lin.vwls_mdvi(None, model, reg, allocation, allocation, 100, lin.VWLSPhases(5, 6))


def test_exact_binomial_sampler_matches_the_binomial_law(x64):
    """The inversion (mean < 10) and BTRS (mean >= 10) branches, reflected p > 1/2, and edges."""
    from scipy import stats

    cases = [(15, 0.3), (1000, 0.005), (25, 0.45), (1000, 0.3), (50, 0.9), (10**6, 0.5), (200, 0.06), (10**9, 1e-4)]
    draws = 100_000
    counts = jnp.asarray([[float(n)] * draws for n, _ in cases])
    probs = jnp.asarray([[p] * draws for _, p in cases])
    samples = np.asarray(jax.jit(generative.binomial)(jax.random.key(4), counts, probs))
    for (n, p), x in zip(cases, samples):
        assert np.all(x == np.round(x)) and x.min() >= 0 and x.max() <= n
        mean, sd = n * p, math.sqrt(n * p * (1 - p))
        ks = np.arange(max(0, int(mean - 6 * sd)), min(n, int(mean + 6 * sd)) + 1)
        expected = draws * stats.binom.pmf(ks, n, p)
        keep = expected >= 20
        inside = (x >= ks[0]) & (x <= ks[-1])
        observed = np.bincount((x[inside] - ks[0]).astype(int), minlength=ks.size)[keep]
        chi2 = ((observed - expected[keep]) ** 2 / expected[keep]).sum()
        assert stats.chi2.sf(chi2, keep.sum() - 1) > 1e-4, (n, p)
    edges = generative.binomial(jax.random.key(5), jnp.array([0.0, 7.0, 7.0, 3e9]), jnp.array([0.5, 0.0, 1.0, 1.0]))
    np.testing.assert_array_equal(np.asarray(edges), [0.0, 0.0, 7.0, 3e9])


def test_tabular_sampled_mdvi_with_the_multinomial_sampler(x64):
    mdp = chain(5, slip=0.3)
    model = mdp.model()
    values = jnp.arange(5.0)
    keys = jax.random.split(jax.random.key(6), 4000)
    estimates = np.asarray(jax.vmap(lambda k: generative.sampled_expectation(k, model, values, 20, "multinomial"))(keys))
    assert estimates.shape == (4000, 5, 2)
    exact = np.asarray(solvers.expected_next(model, values))
    P = mdp.transitions
    variance = ((P * np.arange(5.0) ** 2).sum(-1) - exact**2) / 20
    np.testing.assert_allclose(estimates.mean(0), exact, atol=5 * np.sqrt(variance.max() / 4000))
    np.testing.assert_allclose(estimates.var(0), variance, rtol=0.1)
    run = solvers.sampled_mdvi(keys[0], model, Regularization.from_alpha_beta(0.9, HARD_MAX), 5, 20, sampler="multinomial")
    np.testing.assert_array_equal(np.asarray(run.samples), np.full(5, 5 * 2 * 20))
