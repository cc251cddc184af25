"""TabularMDP validation and the generators."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from envs.tabular import TabularMDP, arm_mdp, chain, garnet, gridworld, horizon_to_discount
from mdvi.tabular import optimal_values


def _valid():
    P = np.full((3, 2, 3), 1 / 3)
    r = np.zeros((3, 2))
    return P, r


def _with(P=None, r=None, **kwargs):
    P0, r0 = _valid()
    return TabularMDP(P0 if P is None else P, r0 if r is None else r, kwargs.pop("discount", 0.9), **kwargs)


def _bad_row():
    P, _ = _valid()
    P[1, 0] = [0.5, 0.3, 0.1]
    return P


def _negative():
    P, _ = _valid()
    P[0, 1] = [1.2, -0.2, 0.0]
    return P


def _nan_p():
    P, _ = _valid()
    P[2, 1, 0] = np.nan
    return P


def _nan_r():
    _, r = _valid()
    r[1, 1] = np.nan
    return r


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: _with(P=np.ones((3, 3)) / 3), r"shape \[S, A, S\]"),
        (lambda: _with(P=np.full((3, 2, 4), 0.25)), r"3 != 4"),
        (lambda: _with(r=np.zeros((2, 3))), "rewards must have shape"),
        (lambda: _with(P=_bad_row()), r"rows must sum to 1.*P\[1, 0, :\] sums to 0.9"),
        (lambda: _with(P=_negative()), ">= 0"),
        (lambda: _with(P=_nan_p()), "transitions contain NaN"),
        (lambda: _with(r=_nan_r()), r"rewards contain NaN or inf, first at \(s, a\) = \(1, 1\)"),
        (lambda: _with(r=np.full((3, 2), np.inf)), "rewards contain NaN or inf"),
        (lambda: _with(discount=1.0), r"discount must lie in \[0, 1\)"),
        (lambda: _with(discount=-0.1), r"discount must lie in \[0, 1\)"),
        (lambda: _with(discount=float("nan")), r"discount must lie in \[0, 1\)"),
        (lambda: _with(discount="0.9"), "discount must be a real number"),
        (lambda: _with(initial=np.array([0.5, 0.5])), "initial distribution must have shape"),
        (lambda: _with(initial=np.array([0.5, 0.2, 0.2])), "initial distribution must sum to 1"),
        (lambda: _with(initial=np.array([1.5, -0.5, 0.0])), "initial distribution must be finite and >= 0"),
    ],
)
def test_malformed_mdps_are_rejected_with_a_named_problem(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_rows_within_tolerance_are_accepted_and_renormalised():
    P, r = _valid()
    P[0, 0] = [1 / 3 + 5e-7, 1 / 3, 1 / 3]
    mdp = TabularMDP(P, r, 0.5)
    np.testing.assert_allclose(mdp.transitions.sum(-1), 1.0, rtol=0, atol=1e-15)
    with pytest.raises(ValueError):
        mdp.transitions[0, 0, 0] = 1.0  # frozen arrays


def test_garnet_structure():
    mdp = garnet(40, 3, 4, 0.9, seed=7)
    support = (mdp.transitions > 0).sum(-1)
    assert support.max() == 4 and support.min() >= 3  # coinciding cut points are ~impossible
    assert np.all(support == 4)
    np.testing.assert_allclose(mdp.transitions.sum(-1), 1.0)
    assert np.all((mdp.rewards >= 0) & (mdp.rewards <= 1))
    again = garnet(40, 3, 4, 0.9, seed=7)
    np.testing.assert_array_equal(mdp.transitions, again.transitions)
    other = garnet(40, 3, 4, 0.9, seed=8)
    assert not np.array_equal(mdp.transitions, other.transitions)
    with pytest.raises(ValueError, match="branching"):
        garnet(5, 2, 6)


def test_garnet_probabilities_are_uniform_on_the_simplex():
    # Gaps of sorted uniform cut points are Dirichlet(1, ..., 1): each coordinate has mean
    # 1/N_B and variance (N_B - 1) / (N_B^2 (N_B + 1)).
    mdp = garnet(200, 10, 3, 0.9, seed=0)
    _, probs = mdp.successors()
    first = probs.reshape(-1, 3)[:, 0]  # first listed successor: an exchangeable coordinate
    assert abs(first.mean() - 1 / 3) < 4 * np.sqrt(2 / 36 / len(first))
    assert abs(first.var() - 2 / 36) < 0.01


def test_successor_lists_reproduce_the_dense_tensor():
    mdp = gridworld(4, slip=0.2)
    states, probs = mdp.successors()
    dense = np.zeros_like(mdp.transitions)
    S, A, _ = states.shape
    for s in range(S):
        for a in range(A):
            np.add.at(dense[s, a], states[s, a], probs[s, a])
    np.testing.assert_allclose(dense, mdp.transitions)


def test_chain_and_gridworld_have_sensible_optima(x64):
    c = chain(10, slip=0.1, discount=0.95)
    opt = optimal_values(c.model())
    # far from the left end, moving right is optimal
    assert np.all(np.asarray(opt.policy)[3:, 1] == 1.0)
    g = gridworld(5, slip=0.1, discount=0.9)
    v = np.asarray(optimal_values(g.model()).v)
    assert v.argmax() == 24 and v[0] < v[12] < v[24]


@pytest.mark.parametrize("horizon", [8, 32, 128])
def test_arm_mdp_has_the_designed_gap(x64, horizon):
    gamma = horizon_to_discount(horizon)
    mdp = arm_mdp(gamma, epsilon=0.5, num_arms=4)
    q0 = np.asarray(optimal_values(mdp.model()).q)[0]
    assert q0.argmax() == 0
    np.testing.assert_allclose(q0[0] - q0[1:], 1.0, rtol=1e-9)
    # the ordinary arms have V(y) = 3 / (4 (1 - gamma))
    np.testing.assert_allclose(q0[1:] / gamma, 0.75 * horizon, rtol=1e-9)


def test_arm_mdp_rejects_impossible_gaps():
    with pytest.raises(ValueError, match="too large"):
        arm_mdp(0.5, epsilon=10.0)
    with pytest.raises(ValueError, match=r"discount in \[1/4, 1\)"):
        arm_mdp(0.1, epsilon=0.1)


def test_rewards_whose_values_would_overflow_are_refused(x64):
    P, _ = _valid()
    with pytest.raises(ValueError, match=r"rewards are too large.*max \|r\| / \(1 - gamma\) = inf"):
        TabularMDP(P, np.full((3, 2), 1e308), 0.9)
    with pytest.raises(ValueError, match="rewards are too large"):
        TabularMDP(P, np.full((3, 2), -1e153), 0.99)  # finite values, overflowing squares
    # the limit depends on the dtype the solvers run in
    mdp = TabularMDP(P, np.full((3, 2), 1e30), 0.9)
    assert float(mdp.model(dtype=np.float64).reward[0, 0]) == 1e30
    with pytest.raises(ValueError, match="rewards are too large.*float32"):
        mdp.model(dtype=np.float32)


@pytest.mark.parametrize(
    "build, name",
    [
        (lambda: garnet(3.5, 2, 2), "num_states"),
        (lambda: garnet(5, 2.0, 2), "num_actions"),
        (lambda: garnet(5, 2, True), "branching"),
        (lambda: garnet(5, 2, 2, seed=1.5), "seed"),
        (lambda: chain(4.5), "num_states"),
        (lambda: chain(5, slip="0.1"), "slip"),
        (lambda: gridworld(3.0), "size"),
        (lambda: arm_mdp(0.9, 0.1, num_arms=2.5), "num_arms"),
        (lambda: arm_mdp(0.9, "0.1"), "epsilon"),
        (lambda: horizon_to_discount("8"), "horizon"),
    ],
)
def test_generators_refuse_non_integer_counts_naming_the_argument(build, name):
    with pytest.raises(ValueError, match=rf"^{name} must be an? (integer|real number)"):
        build()


def test_an_empty_garnet_names_num_states_not_the_branching():
    with pytest.raises(ValueError, match=r"^num_states must be >= 1, got 0"):
        garnet(0, 3, 5)
    with pytest.raises(ValueError, match=r"^num_actions must be >= 1, got 0"):
        garnet(4, 0, 2)


@pytest.mark.parametrize(
    "discount",
    [np.array(0.9), np.float32(0.5), np.array(0, dtype=np.int64), jnp.array(0.9), jnp.asarray(0.25, jnp.float32)],
)
def test_zero_dimensional_real_arrays_are_accepted_as_discounts(discount):
    P, r = _valid()
    mdp = TabularMDP(P, r, discount)
    assert type(mdp.discount) is float and mdp.discount == float(discount)
    # and by the generators that pass it on
    assert garnet(4, 2, 2, discount).discount == float(discount)


@pytest.mark.parametrize(
    "discount, message",
    [
        (np.array(True), "be a real number"),
        (True, "be a real number"),
        (np.array([0.9]), "be a real number"),
        (jnp.array([0.9]), "be a real number"),
        (np.array(0.9 + 0j), "be a real number"),
        (np.array(np.nan), r"lie in \[0, 1\)"),
        (jnp.array(1.0), r"lie in \[0, 1\)"),
        ("0.9", "be a real number"),
    ],
)
def test_discounts_that_are_not_real_numbers_in_range_are_still_refused(discount, message):
    P, r = _valid()
    with pytest.raises(ValueError, match=f"^discount must {message}"):
        TabularMDP(P, r, discount)
