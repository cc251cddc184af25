"""The DVW paper's pitfall maze and deep MDVI with a generative model on it (issue 16)."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rlax

from agents.deep_mdvi import (
    DeepMDVI,
    DeepMDVIConfig,
    make_sweep,
    make_train,
    per_sample_targets,
    prepare_problem,
    regression_targets,
    sampled_next_mean,
    stack_problems,
)
from envs import generative
from envs.maze import (
    DOWN,
    GOAL,
    LEFT,
    NOOP,
    PITFALL,
    RIGHT,
    UP,
    layout_from_string,
    make_maze,
    maze_from_layout,
    maze_transitions,
    pitfall_layout,
    state_index,
)
from mdvi.regularized import munchausen_target, soft_value
from mdvi.tabular import MDVIState, exact_mdvi_step, expected_next

HAND = "S.#/.D./..G"  # 3 x 3: start, wall at (0, 2), pitfall at (1, 1), goal at (2, 2)


def _s(row, col, size=3):
    return state_index(row, col, size)


# ---------------------------------------------------------------------------------------------
# The maze
# ---------------------------------------------------------------------------------------------


def test_rows_sum_to_one_on_random_mazes():
    for seed in range(3):
        maze = make_maze(size=7, num_pitfalls=4, seed=seed)
        P = maze_transitions(maze.layout, 0.1)
        np.testing.assert_allclose(P.sum(-1), 1.0, atol=1e-12)
        assert (P >= 0).all()
        assert maze.mdp.num_states == 49 and maze.mdp.num_actions == 5
        assert maze.features.shape == (49, 5)


def test_hand_checked_cells():
    maze = maze_from_layout(layout_from_string(HAND), slip=0.1, discount=0.9)
    P, r = maze.mdp.transitions, maze.mdp.rewards
    start, corridor, wall = _s(0, 0), _s(0, 1), _s(0, 2)
    pit, goal, below_start = _s(1, 1), _s(2, 2), _s(1, 0)
    # Start corner: feasible noop, down, right (3 x 0.1); the chosen move gets the other 0.7.
    np.testing.assert_allclose(P[start, RIGHT, [start, corridor, below_start]], [0.1, 0.8, 0.1])
    # A blocked move (up, off the grid) keeps the agent in place: noop's 0.1 plus the 0.7.
    np.testing.assert_allclose(P[start, UP, [start, corridor, below_start]], [0.8, 0.1, 0.1])
    # Into the wall from (0, 1): blocked; the wall itself is never entered from anywhere.
    np.testing.assert_allclose(P[corridor, RIGHT, [corridor, pit, start]], [0.8, 0.1, 0.1])
    assert P[:, :, wall][np.arange(9) != wall].max() == 0.0
    # The pitfall can be entered and absorbs, paying nothing.
    np.testing.assert_allclose(P[corridor, DOWN, pit], 0.8)
    np.testing.assert_allclose(P[pit, :, pit], 1.0)
    assert r[pit].max() == 0.0
    # The goal pays 1 for every action and is not absorbing.
    np.testing.assert_allclose(r[goal], 1.0)
    assert r.sum() == 5.0
    np.testing.assert_allclose(P[goal, UP, [_s(1, 2), goal, _s(2, 1)]], [0.8, 0.1, 0.1])
    np.testing.assert_allclose(P[goal, NOOP, goal], 0.8)
    assert maze.start == start and maze.goal == goal


def test_interior_cell_gives_each_feasible_move_its_slip():
    maze = make_maze(size=5, num_pitfalls=0)
    centre = state_index(2, 2, 5)
    targets = {NOOP: centre, UP: centre - 5, DOWN: centre + 5, LEFT: centre - 1, RIGHT: centre + 1}
    for action in range(5):
        for move, target in targets.items():
            expected = 0.6 if move == action else 0.1
            assert maze.mdp.transitions[centre, action, target] == pytest.approx(expected)


def test_pitfall_layout_is_seeded_distinct_and_keeps_the_path_open():
    a, b, c = (pitfall_layout(25, 8, seed) for seed in (0, 0, 1))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert (a == PITFALL).sum() == 8 and (a == GOAL).sum() == 1
    assert (a[:2, :2] != PITFALL).all() and (a[-2:, -2:] != PITFALL).all()


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: layout_from_string("S.../..G"), "square"),
        (lambda: layout_from_string("S?/.G"), "unknown tile"),
        (lambda: layout_from_string("S./.."), "exactly one goal"),
        (lambda: pitfall_layout(4, 99, 0), "num_pitfalls"),
        (lambda: maze_transitions(pitfall_layout(4, 1, 0), 0.3), "slip"),
        (lambda: DeepMDVIConfig(weighting="sigma"), "weighting"),
        (lambda: DeepMDVIConfig(outer_iterations=10, evaluations=3), "multiple of evaluations"),
        (lambda: DeepMDVIConfig(discount=1.0), "discount"),
    ],
)
def test_bad_input_is_refused(build, message):
    with pytest.raises(ValueError, match=message):
        build()


# ---------------------------------------------------------------------------------------------
# Exact quantities
# ---------------------------------------------------------------------------------------------


def _numpy_value_iteration(P, r, gamma, tol=1e-11):
    v = np.zeros(P.shape[0])
    while True:
        q = r + gamma * np.einsum("san,n->sa", P, v)
        new = q.max(-1)
        if np.abs(new - v).max() < tol:
            return q, new
        v = new


def test_oracle_weights_match_an_independent_numpy_computation():
    maze = make_maze(size=5, num_pitfalls=2, discount=0.95, seed=3)
    problem = prepare_problem(maze.mdp, maze.features)
    P, r, gamma = maze.mdp.transitions, maze.mdp.rewards, maze.mdp.discount
    q_star, v_star = _numpy_value_iteration(P, r, gamma)
    H = 1.0 / (1.0 - gamma)
    S, A = r.shape
    f_star = np.empty((S, A))
    for s in range(S):
        for a in range(A):
            mean = P[s, a] @ v_star
            variance = P[s, a] @ (v_star - mean) ** 2
            f_star[s, a] = H / (variance + H)
    np.testing.assert_allclose(np.asarray(problem.q_star), q_star, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(problem.oracle_weights), f_star, rtol=1e-5)
    assert f_star.min() < 0.9  # the check has teeth: weights vary across pairs


# ---------------------------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small():
    maze = make_maze(size=4, num_pitfalls=1, discount=0.9, seed=1)
    return maze, prepare_problem(maze.mdp, maze.features)


def test_exact_dqn_target_is_value_iteration_step_of_mdvi(small):
    _, problem = small
    config = DeepMDVIConfig(target="dqn", discount=0.9)
    agent, hp = DeepMDVI(config.static_part), config.hyperparameters()
    q_bar = jax.random.normal(jax.random.key(0), problem.q_star.shape) * 3.0
    regularization = config.regularization()  # tau = kappa = 0: alpha = 0, beta = inf
    state = MDVIState(q=q_bar, s=q_bar, w=soft_value(q_bar, 0.0), w_prev=jnp.zeros(q_bar.shape[0]))
    expected = exact_mdvi_step(problem.model, regularization, state).q
    np.testing.assert_allclose(agent.exact_targets(q_bar, problem, hp), expected, rtol=1e-6, atol=1e-6)


def test_exact_mdqn_target_is_the_mdvi_step_in_munchausen_form(small):
    """With ``Qbar_k = s_k - alpha w_{k-1}`` the Munchausen target is ``q_{k+1} + alpha tau log pi_k``
    (Vieillard et al. 2020, Thm 1), for exact MDVI iterates from a few steps of the core's solver."""
    _, problem = small
    config = DeepMDVIConfig(target="mdqn", discount=0.9, entropy_weight=0.01, log_clip_min=-np.inf)
    agent, hp = DeepMDVI(config.static_part), config.hyperparameters()
    regularization = config.regularization()
    assert regularization.alpha == pytest.approx(0.9)
    state = MDVIState(*(jnp.zeros_like(x) for x in (problem.q_star, problem.q_star)),
                      w=jnp.zeros(problem.q_star.shape[0]), w_prev=jnp.zeros(problem.q_star.shape[0]))
    for _ in range(6):
        state = exact_mdvi_step(problem.model, regularization, state)
    alpha, tau = regularization.alpha, regularization.temperature
    q_bar = state.s - alpha * state.w_prev[:, None]
    after = exact_mdvi_step(problem.model, regularization, state)
    expected = after.q + alpha * (state.s - state.w[:, None])
    got = agent.exact_targets(q_bar, problem, hp)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert float(jnp.max(jnp.abs(alpha * (state.s - state.w[:, None])))) > 1e-2  # the bonus matters here
    assert tau == pytest.approx(0.1)


@pytest.mark.parametrize("target", ["dqn", "mdqn"])
def test_sampled_targets_agree_with_rlax_and_the_core_per_transition(small, target):
    _, problem = small
    config = DeepMDVIConfig(target=target, discount=0.9, entropy_weight=0.05, samples_per_pair=4)
    hp = config.hyperparameters()
    q_bar = jax.random.normal(jax.random.key(1), problem.q_star.shape) * 2.0
    next_states = generative.sample_next_states(jax.random.key(2), problem.model, 4)
    reward = problem.model.reward
    got = regression_targets(q_bar, reward, 0.9, lambda v: sampled_next_mean(v, next_states), hp, -1.0)
    samples = per_sample_targets(q_bar, reward, 0.9, next_states, hp, -1.0)
    S, A, M = next_states.shape
    s_idx, a_idx, _ = jnp.meshgrid(jnp.arange(S), jnp.arange(A), jnp.arange(M), indexing="ij")
    flat = lambda x: x.reshape(-1)  # noqa: E731
    q_tm1, q_t = q_bar[flat(s_idx)], q_bar[flat(next_states)]
    a, r = flat(a_idx), reward[flat(s_idx), flat(a_idx)]
    discount = jnp.full(a.shape, 0.9)
    if target == "dqn":
        taken = q_tm1[jnp.arange(a.size), a]
        reference = jax.vmap(rlax.q_learning)(q_tm1, a, r, discount, q_t) + taken
    else:
        regularization = config.regularization()
        reference = jax.vmap(munchausen_target, in_axes=(0, 0, 0, 0, 0, None, None, None))(
            q_tm1, a, r, discount, q_t, regularization.temperature, regularization.munchausen_alpha, -1.0
        )
    reference = reference.reshape(S, A, M)
    np.testing.assert_allclose(samples, reference, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got, reference.mean(-1), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------


def _tiny(**kwargs):
    base = dict(samples_per_pair=2, outer_iterations=4, inner_steps=3, evaluations=2, discount=0.9, hidden=(16, 16))
    return DeepMDVIConfig(**{**base, **kwargs})


@pytest.mark.parametrize("dvw", [False, True])
def test_vmapped_mazes_seeds_and_variants_equal_separate_runs(dvw):
    mazes = [make_maze(size=4, num_pitfalls=1, discount=0.9, seed=seed) for seed in (0, 5)]
    problems = stack_problems([prepare_problem(m.mdp, m.features) for m in mazes])
    weightings = ("dvw",) if dvw else ("uniform", "oracle")
    configs = [_tiny(target=t, weighting=w) for t in ("dqn", "mdqn") for w in weightings]
    keys = jax.random.split(jax.random.key(7), 2)
    init_keys = jax.vmap(lambda k: jax.random.split(k)[0])(keys)
    loop_keys = jax.vmap(lambda k: jax.random.split(k)[1])(keys)
    init, run, hps = make_sweep(configs)
    states = init(problems, init_keys)
    states = jax.tree.map(lambda x: jnp.broadcast_to(x, (len(configs), *x.shape)), states)
    _, batched = jax.jit(run)(states, problems, loop_keys, hps)
    assert batched.gap.shape == (len(configs), 2, 2, 2)
    agent = DeepMDVI(configs[0].static_part)

    @jax.jit
    def alone(problem, key, hp):  # one unbatched run, the same split of the key as make_train
        init_key, loop_key = jax.random.split(key)
        return agent.run_evaluations(agent.init(problem, init_key), problem, loop_key, hp, 2)[1]

    for v, config in enumerate(configs):
        for m in range(2):
            problem = jax.tree.map(lambda x, m=m: x[m], problems)
            for s in range(2):
                single = alone(problem, keys[s], config.hyperparameters())
                for field in ("gap", "regression_error", "loss", "weight_gap"):
                    np.testing.assert_allclose(
                        getattr(batched, field)[v, m, s], getattr(single, field), rtol=2e-4, atol=1e-6,
                        err_msg=f"{field} of variant {v}, maze {m}, seed {s}",
                    )
    # Different variants, mazes and seeds really differ (the comparison is not trivially equal).
    assert not np.allclose(batched.loss[0], batched.loss[1])
    assert not np.allclose(batched.loss[:, 0], batched.loss[:, 1])
    assert not np.allclose(batched.loss[:, :, 0], batched.loss[:, :, 1])


def test_oracle_weights_enter_the_loss_and_dvw_learns_its_scale(small):
    _, problem = small
    key = jax.random.key(3)
    results = {w: make_train(_tiny(weighting=w))(problem, key)[1] for w in ("uniform", "oracle", "dvw")}
    assert not np.allclose(results["uniform"].loss, results["oracle"].loss)
    np.testing.assert_allclose(results["oracle"].weight_correlation, 1.0, rtol=1e-5)
    assert np.isnan(results["uniform"].weight_correlation).all()
    dvw = results["dvw"]
    assert np.isfinite(dvw.weight_correlation).all() and (dvw.dvw_scale != np.e).all()
    assert ((dvw.gap >= 0) & (dvw.gap <= 1.5)).all()


def test_loop_fits_the_exact_target_when_given_the_exact_expectation(small):
    """f = 1 and the exact expectation: after many Adam steps the net regresses the exact MDVI target."""
    _, problem = small
    config = _tiny(inner_steps=400, hidden=(64, 64), learning_rate=3e-3)
    agent, hp = DeepMDVI(config.static_part), config.hyperparameters()
    state = agent.init(problem, jax.random.key(0))
    exact = lambda v: expected_next(problem.model, v)  # noqa: E731
    step = jax.jit(lambda st: agent.outer_iteration(st, problem, jax.random.key(1), hp, next_mean=exact))
    for _ in range(3):
        state, _ = step(state)
    diagnostics = agent.diagnose(state, problem, jnp.zeros(()), hp)
    scale = float(jnp.max(jnp.abs(problem.q_star)))
    assert float(diagnostics.regression_error) < 0.05 * scale


# ---------------------------------------------------------------------------------------------
# The experiment
# ---------------------------------------------------------------------------------------------


def test_experiment_writes_its_files_and_refuses_to_overwrite(tmp_path):
    from experiments.maze import MazeConfig, run
    from experiments.results import RunExistsError

    config = MazeConfig(size=4, num_pitfalls=1, mazes=2, seeds=1, samples_per_pair=(2,), targets=("dqn",),
                        weightings=("oracle", "dvw"), outer_iterations=4, inner_steps=2, evaluations=2,
                        final_evaluations=1, hidden=(8, 8), out=tmp_path / "maze", progress=False)
    summary = run(config)
    names = [row["variant"] for row in summary["variants"]]
    assert names == ["f* DQN", "DVW DQN"]
    for name in ("metrics.csv", "summary.json", "config.json", "gap.png", "dvw_weights.png"):
        assert (tmp_path / "maze" / name).exists(), name
    saved = json.loads((tmp_path / "maze" / "summary.json").read_text())
    assert saved["variants"][1]["official_gap"] is not None
    assert 0 <= saved["variants"][0]["final_gap"] <= 1.5
    with pytest.raises(RunExistsError):
        run(config)


def test_paper_budget_and_gamma_default():
    from experiments.maze import MazeConfig

    paper = MazeConfig(paper=True).resolved()
    assert (paper.size, paper.num_pitfalls, paper.mazes, paper.seeds) == (25, 8, 20, 3)
    assert (paper.outer_iterations, paper.inner_steps, paper.evaluations) == (20_000, 100, 100)
    assert MazeConfig().target_discount == 0.995 == MazeConfig().env_discount
    assert dataclasses.replace(MazeConfig(), gamma=0.99).agent_config("dqn", "uniform", 3).discount == 0.99
