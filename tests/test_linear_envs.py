"""Linear MDPs: validation, constructors, and ground truth through the tabular solvers."""

from __future__ import annotations

import numpy as np
import pytest

from envs.linear import (
    LinearMDP,
    block_copies,
    family_f1,
    family_f2,
    family_f3,
    family_f4,
    gap_delta,
    kitamura_hard_mdp,
    low_rank_mixture,
    one_hot,
)
from envs.tabular import garnet
from mdvi import tabular as solvers
from theory.design import optimal_design


def _values(mdp):
    model = mdp.to_tabular().model()
    return np.asarray(solvers.optimal_values(model).v), np.asarray(solvers.optimal_values(model).q)


def test_one_hot_reproduces_the_tabular_mdp():
    base = garnet(7, 3, 3, discount=0.8, seed=2)
    mdp = one_hot(base)
    assert mdp.dim == 21
    np.testing.assert_array_equal(mdp.transitions, base.transitions)
    np.testing.assert_array_equal(mdp.rewards, base.rewards)
    np.testing.assert_allclose(optimal_design(mdp.flat_features()).weights, np.full(21, 1 / 21))


def test_low_rank_mixture_q_is_linear_in_phi(x64):
    mdp = low_rank_mixture(30, 4, 5, branching=6, discount=0.9, seed=1)
    P = mdp.transitions
    assert np.allclose(P.sum(-1), 1) and P.min() >= 0
    assert np.linalg.matrix_rank(mdp.flat_features()) == 5
    assert np.all((mdp.rewards >= 0) & (mdp.rewards <= 1))
    # Q^pi = phi^T (theta_r + gamma mu V^pi) for any policy: an independent linear-algebra check
    rng = np.random.default_rng(0)
    policy = rng.dirichlet(np.ones(4), size=30)
    model = mdp.to_tabular().model()
    v_pi = np.asarray(solvers.policy_evaluation(model, policy))
    q_linear = mdp.features @ (mdp.reward_params + mdp.discount * mdp.factors @ v_pi)
    q_tabular = mdp.rewards + mdp.discount * P @ v_pi
    np.testing.assert_allclose(q_linear, q_tabular, atol=1e-12)


def test_reparametrised_features_give_the_same_mdp_and_design():
    mdp = low_rank_mixture(20, 3, 4, branching=5, seed=4)
    B = np.random.default_rng(1).standard_normal((4, 4)) + 3 * np.eye(4)
    # phi -> B^T phi, mu -> B^{-1} mu, theta -> B^{-1} theta
    other = LinearMDP(
        mdp.features @ B, np.linalg.solve(B, mdp.factors), np.linalg.solve(B, mdp.reward_params), mdp.discount
    )
    np.testing.assert_allclose(other.transitions, mdp.transitions, atol=1e-12)
    np.testing.assert_allclose(other.rewards, mdp.rewards, atol=1e-12)
    a = optimal_design(mdp.flat_features(), tolerance=1e-8)
    b = optimal_design(other.flat_features(), tolerance=1e-8)
    np.testing.assert_allclose(a.weights, b.weights, atol=1e-6)


def test_kitamura_hard_mdp_matches_its_definition():
    mdp = kitamura_hard_mdp(discount=0.9, dim=4, num_actions=30, delta=0.01, seed=3)
    assert (mdp.num_states, mdp.num_actions, mdp.dim) == (2, 30, 4)
    actions = mdp.features[0, :, 2:]
    beta = mdp.factors[2:, 0] / 0.01
    assert any(np.allclose(beta, a) for a in actions)  # beta is one of the actions
    np.testing.assert_allclose(mdp.transitions[0, :, 0], 0.9 + 0.01 * actions @ beta)
    np.testing.assert_allclose(mdp.transitions[1, :, 1], 1.0)
    np.testing.assert_allclose(mdp.rewards[0], 1.0)
    np.testing.assert_allclose(mdp.rewards[1], 0.0)
    with pytest.raises(ValueError, match="not a transition kernel"):
        kitamura_hard_mdp(discount=0.99, dim=4, delta=0.1, seed=3)  # delta <beta, beta> > 1 - gamma


@pytest.mark.parametrize("horizon", [8, 32, 128])
def test_f_families_have_the_designed_gap_and_variances(x64, horizon):
    eps = 0.5
    f1, f2, f3 = family_f1(horizon, eps), family_f2(horizon, eps), family_f3(horizon, eps)
    assert (f1.dim, f2.dim, f3.dim) == (4, 6, 8)
    # F2 and F3 are the same MDP with different features
    np.testing.assert_allclose(f2.transitions, f3.transitions, atol=1e-15)
    np.testing.assert_allclose(f2.rewards, f3.rewards)
    v_star, q_star = _values(f2)
    # the best action at s0 is (1, 1) and beats the second best by 2 eps in value
    model = f2.to_tabular().model()
    best = np.argmax(q_star, axis=1)
    assert tuple(f2.features[0, best[0], 4:6]) == (1.0, 1.0)
    second = best.copy()
    second[0] = [i for i, a in enumerate(f2.features[0, :, 4:6]) if tuple(a) == (1.0, 0.0)][0]
    v_second = np.asarray(solvers.policy_evaluation(model, np.eye(4)[second]))
    assert v_star[0] - v_second[0] == pytest.approx(2 * eps, rel=1e-9)
    # next-state variance of V*: at most H at s0 (one rare jump to 0 from V* < H), about H^2/4
    # at the risky sibling s2
    P = f2.transitions
    variance = (P * v_star**2).sum(-1) - (P @ v_star) ** 2
    assert variance[0].max() <= horizon
    assert variance[3].min() > 0.9 * horizon**2 / 4
    v1, _ = _values(f1)
    assert v1[0] == pytest.approx(v_star[0])


def test_block_copies_tile_the_ground_truth(x64):
    base = family_f2(16, 0.5)
    copies = block_copies(base, 3)
    assert (copies.num_states, copies.dim) == (12, 18)
    v_base, _ = _values(base)
    v_copies, _ = _values(copies)
    np.testing.assert_allclose(v_copies, np.tile(v_base, 3), atol=1e-9)
    np.testing.assert_allclose(copies.initial.sum(), 1.0)


def test_gap_delta_solves_its_equation_and_rejects_large_eps():
    for horizon in (8, 64):
        gamma = 1 - 1 / horizon
        delta = gap_delta(horizon, 0.5)
        value = [1 / (1 - gamma * (gamma + delta * x)) for x in (1.5, 1.0)]
        assert value[0] - value[1] == pytest.approx(1.0, rel=1e-10)
    with pytest.raises(ValueError, match="too large"):
        gap_delta(4, 5.0)


def _valid():
    phi = np.array([[[1.0, 0.0], [0.0, 1.0]], [[0.5, 0.5], [1.0, 0.0]]])
    mu = np.array([[0.2, 0.8], [0.6, 0.4]])
    return phi, mu, np.array([1.0, 0.0])


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda p, m, t: (p[0], m, t), "shape \\[S, A, d\\]"),
        (lambda p, m, t: (p, m.T[:1], t), "factors mu must have shape"),
        (lambda p, m, t: (p, m, t[:1]), "reward_params must have shape"),
        (lambda p, m, t: (p, np.array([[1.2, -0.2], [0.6, 0.4]]), t), "not a transition kernel"),
        (lambda p, m, t: (p, np.array([[0.2, 0.7], [0.6, 0.4]]), t), "sum to 1"),
        (lambda p, m, t: (p, m, np.array([np.nan, 0.0])), "NaN"),
    ],
)
def test_malformed_linear_mdps_are_rejected(change, message):
    phi, mu, theta = change(*_valid())
    with pytest.raises(ValueError, match=message):
        LinearMDP(phi, mu, theta, 0.9)


def test_bad_discount_is_rejected():
    with pytest.raises(ValueError, match="discount"):
        LinearMDP(*_valid(), 1.0)


def test_reward_params_whose_values_would_overflow_are_refused():
    phi, mu, _ = _valid()
    with pytest.raises(ValueError, match=r"^reward_params .* are too large"):
        LinearMDP(phi, mu, np.array([1e308, 0.0]), 0.9)


@pytest.mark.parametrize(
    "build, name",
    [
        (lambda: low_rank_mixture(6, 2, 2.5, 2), "dim"),
        (lambda: low_rank_mixture(6.0, 2, 2, 2), "num_states"),
        (lambda: low_rank_mixture(6, 2, 2, 2, seed=0.5), "seed"),
        (lambda: kitamura_hard_mdp(num_actions=3.5), "num_actions"),
        (lambda: kitamura_hard_mdp(dim=4.0), "dim"),
        (lambda: block_copies(family_f1(8), 2.5), "copies"),
        (lambda: gap_delta("8", 0.5), "horizon"),
        (lambda: family_f2(8, epsilon=None), "epsilon"),
    ],
)
def test_constructors_refuse_non_integer_counts_naming_the_argument(build, name):
    with pytest.raises(ValueError, match=rf"^{name} must be an? (integer|real number)"):
        build()


def test_zero_dimensional_arrays_are_accepted_as_discounts_and_horizons():
    import jax.numpy as jnp

    assert LinearMDP(*_valid(), np.array(0.9)).discount == 0.9
    assert LinearMDP(*_valid(), jnp.array(0.5)).discount == 0.5
    assert family_f1(np.array(8.0)).discount == family_f1(8).discount
    with pytest.raises(ValueError, match="^discount must be a real number"):
        LinearMDP(*_valid(), np.array([0.9]))


# --- F4: the dimension family with one decision ------------------------------------------------


def _next_state_variance(mdp, v):
    P = mdp.transitions
    return P @ (v * v) - (P @ v) ** 2


def test_f4_at_d6_is_f2_up_to_the_order_of_the_actions():
    f2, f4 = family_f2(16.0), family_f4(16.0, dim=6)
    order = [0, 2, 1, 3]  # F4's actions (0, e1, e2, 1) -> F2's corners (0,0), (0,1), (1,0), (1,1)
    np.testing.assert_array_equal(f4.features[:, order], f2.features)
    np.testing.assert_array_equal(f4.factors, f2.factors)
    np.testing.assert_array_equal(f4.reward_params, f2.reward_params)
    assert f4.discount == f2.discount


@pytest.mark.parametrize("dim, horizon", [(6, 8.0), (11, 32.0), (48, 128.0)])
def test_f4_var_p_v_star_matches_its_closed_form(x64, dim, horizon):
    mdp = family_f4(horizon, dim=dim)
    m = dim - 4
    assert mdp.dim == dim and mdp.num_actions == m + 2 and mdp.num_states == 4
    v, q = _values(mdp)
    gamma, H = mdp.discount, horizon
    delta = gap_delta(horizon, 0.5)
    x = np.r_[0.0, 1.0, np.full(m - 1, 0.5 / (m - 1)), 1.5]  # <a, beta> for (0, e_1, .., e_m, 1_m)
    v0 = 1.0 / (1.0 - gamma * (gamma + 1.5 * delta))
    np.testing.assert_allclose(v, [v0, 0.0, H, gamma * (H / 2 + 1.5 * delta * v0)], rtol=1e-9, atol=1e-9)
    # the all-ones action is the unique best at s0 and at s2
    assert np.argmax(q[0]) == m + 1 and np.argmax(q[3]) == m + 1
    assert np.sort(q[0])[-2] < q[0, m + 1] - 1e-9
    variance = _next_state_variance(mdp, v)
    p = gamma + delta * x
    qb = delta * x
    np.testing.assert_allclose(variance[0], p * (1 - p) * v0**2, rtol=1e-8)
    np.testing.assert_allclose(variance[3], H**2 / 4 + qb * (1 - qb) * v0**2 - qb * H * v0, rtol=1e-8)
    np.testing.assert_allclose(variance[1:3], 0.0, atol=1e-8)
    # the F2 contrast at every d: s0's points order H (-> H / 4), the sibling's about H^2 / 4
    assert variance[0].max() <= 0.6 * H and variance[3].min() >= 0.22 * H**2
    assert variance[3].min() >= variance[0].max() * H / 3
    # the closed form of Var at s0 is the value gap built in by gap_delta: V(1.5) - V(1) = 2 eps
    v_e1 = 1.0 / (1.0 - gamma * (gamma + delta))
    assert v0 - v_e1 == pytest.approx(1.0, rel=1e-9)


@pytest.mark.parametrize("dim", [8, 12, 24])
def test_f4_design_grows_with_d_at_one_decision(dim):
    mdp = family_f4(32.0, dim=dim)
    features = mdp.flat_features()
    design = optimal_design(features, tolerance=1e-6)
    assert design.rank == dim
    assert len(design.support) == 2 * dim - 4
    information = (features * design.weights[:, None]).T @ features
    m = dim - 4
    contrast = mdp.features[0, m + 1] - mdp.features[0, 1]  # phi(s0, 1_m) - phi(s0, e_1)
    assert np.count_nonzero(contrast) == m - 1
    leverage = contrast @ np.linalg.solve(information, contrast)
    assert 1.6 * dim <= leverage <= 2 * dim
    # block copies of F2 at the same d: support 6k and contrast leverage 6k = d
    copies = block_copies(family_f2(32.0), 2)
    copies_design = optimal_design(copies.flat_features(), tolerance=1e-6)
    assert len(copies_design.support) == 12


def test_f4_rotation_spreads_every_feature_and_keeps_the_mdp_and_its_design():
    base, rotated = family_f4(16.0, dim=9), family_f4(16.0, dim=9, rotation_seed=3)
    assert np.all(np.abs(rotated.features[0]) > 1e-6)  # s0's features fill all d coordinates
    np.testing.assert_allclose(rotated.transitions, base.transitions, atol=1e-12)
    np.testing.assert_allclose(rotated.rewards, base.rewards, atol=1e-12)
    a = optimal_design(base.flat_features(), tolerance=1e-8)
    b = optimal_design(rotated.flat_features(), tolerance=1e-8)
    np.testing.assert_allclose(b.leverage, a.leverage, atol=1e-6)
    # seeded and deterministic
    again = family_f4(16.0, dim=9, rotation_seed=3)
    np.testing.assert_array_equal(again.features, rotated.features)
    assert not np.allclose(family_f4(16.0, dim=9, rotation_seed=4).features, rotated.features)


@pytest.mark.parametrize("kwargs, name", [({"dim": 5}, "dim"), ({"dim": 7.5}, "dim"), ({"rotation_seed": -1}, "rotation_seed")])
def test_f4_rejects_bad_arguments_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=name):
        family_f4(16.0, **kwargs)


def test_f4_is_registered_and_built_by_name_like_the_other_families():
    from envs.linear import DIMENSION_FAMILIES, F4_BASE_DIM, FAMILIES

    assert set(FAMILIES) == {"F1", "F2", "F3", "F4"} and DIMENSION_FAMILIES == ("F4",)
    dims = {name: FAMILIES[name](16.0, epsilon=0.25).dim for name in FAMILIES}
    assert dims == {"F1": 4, "F2": 6, "F3": 8, "F4": F4_BASE_DIM}
    # epsilon reaches the family (a smaller gap), and F4 takes its dimension by keyword
    assert FAMILIES["F4"](16.0, epsilon=0.25).name == family_f4(16.0, dim=6, epsilon=0.25).name
    np.testing.assert_array_equal(FAMILIES["F4"](16.0, epsilon=0.25).factors, family_f4(16.0, 6, 0.25).factors)
    assert not np.allclose(FAMILIES["F4"](16.0, epsilon=0.25).factors, FAMILIES["F4"](16.0, epsilon=0.5).factors)
    assert FAMILIES["F4"](16.0, dim=20, epsilon=0.5).dim == 20
