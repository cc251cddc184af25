"""LS-MDVI and VWLS-MDVI: MDVI on linear MDPs with a generative model and a G-optimal design.

Kitamura et al. (2023, arXiv 2305.13185). Tabular MDVI in sum form (:mod:`mdvi.tabular`)
computes ``q_{k+1} = r + gamma P (w_k - alpha w_{k-1})``. In a linear MDP that function is
linear in ``phi``; the linear version replaces ``P (w_k - alpha w_{k-1})`` by a (weighted)
least-squares fit, over the support points ``(x_i, a_i)`` of a design, of the sampled targets

    y_i = r(x_i, a_i) + gamma (1 / n_i) sum_j (w_k - alpha w_{k-1})(s'_ij),   s'_ij ~ P(. | x_i, a_i),

    theta_{k+1} = argmin_theta sum_i n_i f_i (phi_i^T theta - y_i)^2,   q_{k+1} = phi^T theta_{k+1},

with ``n_i = ceil(rho_i N)`` draws at point ``i`` (the Lattimore-Szepesvari allocation of a
per-iteration budget ``N`` by the design ``rho``) and regression weights ``f_i``. The running
sum ``s_k = q_k + alpha s_{k-1}`` stays linear in ``phi``; the policy, the soft value and the
update are the core's (:func:`mdvi.tabular.mdvi_update`, :func:`mdvi.regularized.soft_value`),
and the loop is :func:`mdvi.tabular.scan_mdvi`.

* **LS-MDVI**: ``f = 1`` and the G-optimal design of ``phi``.
* **Oracle-weighted LS-MDVI**: ``f* = 1 / (Var_{P}(V*)(x, a) + H)`` (the Maze code's
  ``f* = H / (Var + H)`` up to a constant, which a weighted regression ignores) and the
  G-optimal design of ``sqrt(f*) phi``: the upper reference.
* **VWLS-MDVI** (:func:`vwls_mdvi`), our statement of the paper's two phases (the exact theorem
  was not retrievable; see ``../shared/reference/dvw-vwls-mdvi.md`` §2):

  1. ``K_1`` iterations of LS-MDVI (``f = 1``), enough for a roughly ``sqrt(H)``-accurate value
     ``v_hat = w_{K_1} - alpha w_{K_1 - 1}`` (the notebook uses ``K_1 = 0.2 K``);
  2. variance fit: with ``N_sigma`` fresh draws allocated by the unweighted design, regress the
     sample means of ``v_hat(s')`` and ``v_hat(s')^2`` on ``phi`` (both ``P v_hat`` and
     ``P v_hat^2`` are linear in ``phi``) and set
     ``sigma_hat^2 = clip(phi^T theta_2 - (phi^T theta_1)^2, 0, H^2)``;
  3. floor and weights: ``f = 1 / (sigma_hat^2 + H)`` (the additive ``+H`` floor: from
     ``sqrt(Var v*) <= sqrt(Var v_hat) + ||v_hat - v*||`` the floor covers the error of a
     ``sqrt(H)``-accurate ``v_hat``);
  4. the G-optimal design of ``sqrt(f) phi`` (computed inside the jitted run,
     :func:`theory.design.design_weights`) and ``K - K_1`` iterations of weighted LS-MDVI.

Every generative-model call is counted: ``samples[k]`` per iteration plus the variance fit.
``sampler="multinomial"`` draws each point's ``n_i`` next states as one multinomial count
vector (same distribution, cost free of ``n_i``), ``"iid"`` draws them one by one. Everything
is jittable and ``vmap``-able over PRNG keys; precision follows the model's dtype.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from envs.linear import LinearMDP
from envs.tabular import TabularModel
from mdvi import generative
from mdvi import tabular as solvers
from mdvi.regularized import Regularization
from theory.design import Design, allocation_counts, column_space, design_weights, optimal_design

Array = jax.Array

SAMPLERS = ("exact", *generative.SAMPLERS)
VARIANCE_KEY_TAG = 2**31 - 1  # fold_in tag of the variance-fit draws (iterations use k)


class LinearModel(NamedTuple):
    """Jittable arrays of a linear MDP.

    Attributes:
      tabular: the tabular view (rewards, discount, successor lists for the generative model,
        exact ``P`` for ground truth).
      features: ``[S, A, r]`` coordinates of ``phi`` in its column space (``phi @ V_r`` from the
        SVD), full column rank ``r``: regressions never need a ridge.
    """

    tabular: TabularModel
    features: Array

    @property
    def flat_features(self) -> Array:
        return self.features.reshape(-1, self.features.shape[-1])


def linear_model(mdp: LinearMDP, representation: str = "auto", dtype=None) -> LinearModel:
    """The jittable model of ``mdp``; ``dtype`` defaults to JAX's default float."""
    tabular = mdp.to_tabular().model(representation, dtype)
    _, basis = column_space(mdp.flat_features())
    coordinates = (mdp.flat_features() @ basis).reshape(mdp.num_states, mdp.num_actions, -1)
    return LinearModel(tabular=tabular, features=jnp.asarray(coordinates, tabular.reward.dtype))


# ---------------------------------------------------------------------------------------------
# Designs and allocations
# ---------------------------------------------------------------------------------------------


class Allocation(NamedTuple):
    """Where and how much to sample in one iteration, and the regression weights.

    Attributes:
      states, actions: ``[m]`` the design points (support of the design, or every pair).
      draws: ``[m]`` generative-model calls per iteration at each point (0 = not sampled).
      weights: ``[m]`` regression weights ``f`` (1 for unweighted least squares).
    """

    states: Array
    actions: Array
    draws: Array
    weights: Array

    @property
    def calls(self) -> Array:
        return jnp.sum(self.draws)


def design(model: LinearModel, weights=None, tolerance: float = 1e-3) -> Design:
    """G-optimal design over all pairs (state-major), of ``sqrt(f) phi`` when ``weights`` given."""
    flat_weights = None if weights is None else np.asarray(weights, np.float64).reshape(-1)
    return optimal_design(np.asarray(model.flat_features), flat_weights, tolerance=tolerance)


def allocate(
    model: LinearModel,
    design_: Design,
    samples_per_iteration: int,
    regression_weights=None,
    pad_to: int | None = None,
) -> Allocation:
    """Host-side allocation on the support of ``design_``: ``n_i = ceil(rho_i N)`` draws.

    ``regression_weights``: ``[S, A]`` weights ``f`` (default 1). ``pad_to``: append entries
    with zero draws (pair 0) up to this length, so allocations of different supports share one
    compiled program; a zero-draw entry is never sampled and has no weight in the regression.
    """
    if samples_per_iteration < 1:
        raise ValueError(f"samples_per_iteration must be >= 1, got {samples_per_iteration}")
    S, A = model.tabular.reward.shape
    if design_.weights.shape != (S * A,):
        raise ValueError(f"the design must weigh the S * A = {S * A} pairs, got {design_.weights.shape}")
    support = design_.support
    draws = np.asarray(allocation_counts(design_.weights, samples_per_iteration))[support]
    f = np.ones(S * A) if regression_weights is None else np.asarray(regression_weights, np.float64).reshape(-1)
    if f.shape != (S * A,) or not np.all(np.isfinite(f)) or np.any(f <= 0):
        raise ValueError("regression_weights must be [S, A], finite and > 0")
    dtype = model.tabular.reward.dtype
    weights = f[support]
    if pad_to is not None:
        if pad_to < support.size:
            raise ValueError(f"pad_to={pad_to} is smaller than the support ({support.size} points)")
        extra = pad_to - support.size
        support = np.concatenate([support, np.zeros(extra, support.dtype)])
        draws = np.concatenate([draws, np.zeros(extra, draws.dtype)])
        weights = np.concatenate([weights, np.ones(extra)])
    return Allocation(
        states=jnp.asarray(support // A),
        actions=jnp.asarray(support % A),
        draws=jnp.asarray(draws, solvers.count_dtype()),
        weights=jnp.asarray(weights, dtype),
    )


def full_allocation(model: LinearModel, design_weights_: Array, samples_per_iteration, regression_weights: Array) -> Allocation:
    """In-jit allocation over every pair (design weights may be traced): zero draws off the support."""
    states, actions = generative.all_pairs(model.tabular)
    draws = allocation_counts(design_weights_, samples_per_iteration).astype(solvers.count_dtype())
    return Allocation(states, actions, draws, regression_weights.reshape(-1))


# ---------------------------------------------------------------------------------------------
# One iteration
# ---------------------------------------------------------------------------------------------


def weighted_least_squares(features: Array, sample_weights: Array, targets: Array) -> Array:
    """``argmin_theta sum_i c_i (phi_i^T theta - y_i)^2`` by a Cholesky solve.

    Args:
      features: ``[m, r]``; the points with ``c_i > 0`` must span R^r (a design's support does).
      sample_weights: ``[m]`` ``c_i >= 0`` (draws times regression weights).
      targets: ``[m]`` or ``[V, m]``.
    Returns:
      ``[r]`` or ``[V, r]``.
    """
    chex.assert_rank([features, sample_weights], [2, 1])
    return targets @ least_squares_operator(features, sample_weights).T


def least_squares_operator(features: Array, sample_weights: Array) -> Array:
    """The ``[r, m]`` matrix ``(X^T C X)^{-1} X^T C`` mapping targets to the fitted ``theta``.

    The design points and weights stay fixed across iterations, so LS-MDVI factors the Gram
    matrix once per run and each iteration is one matrix product.
    """
    weighted = features * sample_weights[:, None].astype(features.dtype)
    gram = weighted.T @ features
    chol = jnp.linalg.cholesky(gram)
    return jax.scipy.linalg.cho_solve((chol, True), weighted.T)


def prediction_operator(model: LinearModel, allocation: Allocation) -> Array:
    """``[S * A, m]``: the fitted ``q`` at every pair as a linear map of the point targets."""
    features = model.features[allocation.states, allocation.actions]
    operator = least_squares_operator(features, allocation.draws * allocation.weights)
    return model.flat_features @ operator


def next_means(
    key: Array | None,
    model: LinearModel,
    allocation: Allocation,
    values: Array,
    sampler: str,
    max_draws: int | None = None,
) -> Array:
    """Estimates of ``(P values)(x_i, a_i)`` at the allocation's points: ``[m]`` or ``[V, m]``.

    ``sampler="exact"`` (or ``key=None``) returns the exact expectations (regression on
    expectations, the infinite-sample limit); otherwise sample means of ``draws_i`` calls.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {SAMPLERS}")
    if key is None or sampler == "exact":
        expected = jax.vmap(functools.partial(solvers.expected_next, model.tabular))(jnp.atleast_2d(values))
        means = expected[:, allocation.states, allocation.actions]
        return means if values.ndim == 2 else means[0]
    return generative.sampled_means_at(
        key, model.tabular, allocation.states, allocation.actions, allocation.draws, values, sampler, max_draws
    )


def ls_mdvi_step(
    key: Array | None,
    model: LinearModel,
    regularization: Regularization,
    state: solvers.MDVIState,
    allocation: Allocation,
    sampler: str = "multinomial",
    max_draws: int | None = None,
    prediction: Array | None = None,
) -> solvers.MDVIState:
    """One (weighted) least-squares MDVI iteration (module docstring); ``key=None`` is exact.

    ``prediction``: :func:`prediction_operator` of the allocation, if already computed.
    Calls: ``sum(allocation.draws)`` (0 if exact).
    """
    prediction = prediction_operator(model, allocation) if prediction is None else prediction
    v = solvers.mdvi_value(state, regularization)
    means = next_means(key, model, allocation, v, sampler, max_draws)
    targets = model.tabular.reward[allocation.states, allocation.actions] + model.tabular.discount * means
    q_next = (prediction @ targets).reshape(model.tabular.reward.shape)
    return solvers.mdvi_update(state, q_next, regularization)


# ---------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------


def _check_sampling(key, sampler: str, max_draws) -> None:
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {SAMPLERS}")
    if key is not None and sampler == "iid" and max_draws is None:
        raise ValueError("the iid sampler needs max_draws (a static bound on the draws per point)")


def _ls_step_fn(key, model, regularization, allocation, sampler, max_draws):
    prediction = prediction_operator(model, allocation)

    def step(state, k):
        step_key = None if key is None else jax.random.fold_in(key, k)
        return ls_mdvi_step(step_key, model, regularization, state, allocation, sampler, max_draws, prediction)

    return step


@functools.partial(jax.jit, static_argnames=("regularization", "num_iterations", "sampler", "max_draws"))
def run_ls_mdvi(
    model: LinearModel,
    regularization: Regularization,
    state: solvers.MDVIState,
    allocation: Allocation,
    num_iterations: int,
    *,
    start: int | Array = 0,
    key: Array | None = None,
    sampler: str = "multinomial",
    max_draws: int | None = None,
    v_star: Array | None = None,
) -> solvers.MDVIRun:
    """Advance (weighted) LS-MDVI by ``num_iterations`` from ``state`` (``start`` iterations done).

    Exact (regression on expectations) when ``key`` is None. Iteration ``k`` draws with
    ``fold_in(key, k)``, the convention of :func:`mdvi.tabular.run_mdvi`, so with one-hot
    features, every pair in the allocation and ``sampler="iid"`` it sees the very samples of
    tabular sampled MDVI.
    """
    _check_sampling(key, sampler, max_draws)
    step = _ls_step_fn(key, model, regularization, allocation, sampler, max_draws)
    ks = jnp.arange(num_iterations) + start
    state, gaps = solvers.scan_mdvi(model.tabular, regularization, state, step, ks, v_star)
    calls = 0 if key is None else allocation.calls
    return solvers.MDVIRun(state=state, gap=gaps, samples=jnp.full((num_iterations,), calls, solvers.count_dtype()))


@functools.partial(jax.jit, static_argnames=("regularization", "sampler", "max_draws"))
def iterate_ls_mdvi(
    model: LinearModel,
    regularization: Regularization,
    state: solvers.MDVIState,
    allocation: Allocation,
    num_iterations,
    *,
    start=0,
    key: Array | None = None,
    sampler: str = "multinomial",
    max_draws: int | None = None,
) -> tuple[solvers.MDVIState, Array]:
    """:func:`run_ls_mdvi` without per-iterate records; ``num_iterations`` may be traced.

    Returns ``(final state, calls made)``; the same iterates as :func:`run_ls_mdvi`.
    """
    _check_sampling(key, sampler, max_draws)
    step = _ls_step_fn(key, model, regularization, allocation, sampler, max_draws)
    state = solvers.iterate_mdvi(state, step, start, num_iterations)
    calls = 0 if key is None else allocation.calls * num_iterations
    return state, jnp.asarray(calls, solvers.count_dtype())


def ls_mdvi(
    key: Array | None,
    model: LinearModel,
    regularization: Regularization,
    allocation: Allocation,
    num_iterations: int,
    *,
    sampler: str = "multinomial",
    max_draws: int | None = None,
    v_star: Array | None = None,
) -> solvers.MDVIRun:
    """(Weighted) LS-MDVI from the standard initialisation; ``vmap`` over ``key`` for seeds."""
    state = solvers.mdvi_init(model.tabular, regularization)
    return run_ls_mdvi(
        model, regularization, state, allocation, num_iterations,
        key=key, sampler=sampler, max_draws=max_draws, v_star=v_star,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Variance weights
# ---------------------------------------------------------------------------------------------


def next_state_variance(model: TabularModel, values: Array) -> Array:
    """Exact ``Var_{s' ~ P(. | s, a)} values(s')`` for every pair: ``[S, A]``."""
    mean = solvers.expected_next(model, values)
    second = solvers.expected_next(model, values * values)
    return jnp.maximum(second - mean * mean, 0.0)


def variance_weights(variance: Array, floor) -> Array:
    """Regression weights ``f = 1 / (variance + floor)`` (the additive ``+H`` floor)."""
    return 1.0 / (variance + floor)


def oracle_weights(model: LinearModel, v_star: Array, floor=None) -> Array:
    """The oracle ``f* = 1 / (Var_P(V*) + H)`` (``floor`` defaults to ``H = 1 / (1 - gamma)``)."""
    floor = 1.0 / (1.0 - model.tabular.discount) if floor is None else floor
    return variance_weights(next_state_variance(model.tabular, v_star), floor)


class VarianceFit(NamedTuple):
    variance: Array  # [S, A] sigma_hat^2, clipped to [0, H^2] (before the floor)
    weights: Array  # [S, A] regression weights f = 1 / (sigma_hat^2 + floor)
    design: Array  # [S * A] the G-optimal design of sqrt(f) phi
    design_g_over_d: Array  # its g / r
    calls: Array  # generative-model calls of the fit


def fit_variance_weights(
    key: Array | None,
    model: LinearModel,
    v_hat: Array,
    allocation: Allocation,
    *,
    floor,
    sampler: str = "multinomial",
    max_draws: int | None = None,
    design_tolerance=1e-3,
    design_max_iterations=2000,
) -> VarianceFit:
    """VWLS-MDVI steps 2-4 (module docstring): variance regression, floor, weighted design.

    Regresses the sample means of ``v_hat(s')`` and ``v_hat(s')^2`` (the same draws) on
    ``phi`` with unweighted least squares over ``allocation``'s draws, sets
    ``sigma_hat^2 = clip(phi^T theta_2 - (phi^T theta_1)^2, 0, H^2)``, ``f = 1 / (sigma_hat^2 +
    floor)`` and computes the design of ``sqrt(f) phi`` in-jit. ``key=None``: exact moments.
    """
    horizon = 1.0 / (1.0 - model.tabular.discount)
    moments = next_means(key, model, allocation, jnp.stack([v_hat, v_hat * v_hat]), sampler, max_draws)
    features = model.features[allocation.states, allocation.actions]
    theta = weighted_least_squares(features, allocation.draws.astype(features.dtype), moments)
    fitted = jnp.einsum("sar,vr->vsa", model.features, theta)
    variance = jnp.clip(fitted[1] - fitted[0] ** 2, 0.0, horizon**2)
    weights = variance_weights(variance, floor)
    weighted_features = jnp.sqrt(weights).reshape(-1, 1) * model.flat_features
    design_state = design_weights(weighted_features, design_tolerance, design_max_iterations)
    calls = 0 if key is None else allocation.calls
    return VarianceFit(variance, weights, design_state.weights, design_state.g_over_d, jnp.asarray(calls, solvers.count_dtype()))


class VWLSRun(NamedTuple):
    state: solvers.MDVIState  # after all K iterations
    gap: Array | None  # [K] ||V* - V^{pi_k}||_inf (NaN without v_star); None from iterate_vwls_mdvi
    samples: Array | None  # [K] calls of each iteration (phase 1, then phase 2); None likewise
    total_samples: Array  # every call: both phases and the variance fit
    fit: VarianceFit


_VWLS_STATIC = ("regularization", "sampler", "max_draws", "design_max_iterations")


def _vwls_check(key, sampler, max_draws, phase1_iterations, num_iterations):
    _check_sampling(key, sampler, max_draws)
    if isinstance(phase1_iterations, int) and isinstance(num_iterations, int):
        if not 0 <= phase1_iterations <= num_iterations:
            raise ValueError(f"need 0 <= phase1_iterations <= num_iterations, got {phase1_iterations}, {num_iterations}")


@functools.partial(jax.jit, static_argnames=(*_VWLS_STATIC, "num_iterations", "phase1_iterations"))
def vwls_mdvi(
    key: Array | None,
    model: LinearModel,
    regularization: Regularization,
    phase1: Allocation,
    variance_allocation: Allocation,
    samples_per_iteration,
    num_iterations: int,
    phase1_iterations: int,
    *,
    variance_floor=None,
    sampler: str = "multinomial",
    max_draws: int | None = None,
    v_star: Array | None = None,
    design_tolerance=1e-3,
    design_max_iterations: int = 2000,
) -> VWLSRun:
    """VWLS-MDVI (module docstring): LS phase, variance fit, weighted design, weighted phase.

    Args:
      key: PRNG key (None: exact, regression on expectations throughout).
      phase1: unweighted allocation of the first ``phase1_iterations`` iterations.
      variance_allocation: draws of the variance fit (its regression weights are ignored: the
        fit is unweighted); drawn with ``fold_in(key, 2**31 - 1)``.
      samples_per_iteration: budget ``N`` of each phase-2 iteration, allocated as
        ``ceil(rho_f N)`` over the weighted design ``rho_f``.
      num_iterations: ``K`` in all (``phase1_iterations <= K``).
      variance_floor: the additive floor (default ``H = 1 / (1 - gamma)``).
      max_draws: static bound on draws per point for ``sampler="iid"`` (must cover phase 1,
        the variance fit and ``ceil(N)`` of phase 2).
      design_tolerance, design_max_iterations: of the in-jit weighted design.
    """
    _vwls_check(key, sampler, max_draws, phase1_iterations, num_iterations)
    floor = 1.0 / (1.0 - model.tabular.discount) if variance_floor is None else variance_floor
    state = solvers.mdvi_init(model.tabular, regularization)
    run1 = run_ls_mdvi(
        model, regularization, state, phase1, phase1_iterations,
        key=key, sampler=sampler, max_draws=max_draws, v_star=v_star,
    )  # fmt: skip
    fit = fit_variance_weights(
        None if key is None else jax.random.fold_in(key, VARIANCE_KEY_TAG),
        model, solvers.mdvi_value(run1.state, regularization), variance_allocation,
        floor=floor, sampler=sampler, max_draws=max_draws,
        design_tolerance=design_tolerance, design_max_iterations=design_max_iterations,
    )  # fmt: skip
    phase2 = full_allocation(model, fit.design, samples_per_iteration, fit.weights)
    run2 = run_ls_mdvi(
        model, regularization, run1.state, phase2, num_iterations - phase1_iterations,
        start=phase1_iterations, key=key, sampler=sampler, max_draws=max_draws, v_star=v_star,
    )  # fmt: skip
    samples = jnp.concatenate([run1.samples, run2.samples])
    return VWLSRun(
        state=run2.state,
        gap=jnp.concatenate([run1.gap, run2.gap]),
        samples=samples,
        total_samples=jnp.sum(samples) + fit.calls,
        fit=fit,
    )


@functools.partial(jax.jit, static_argnames=_VWLS_STATIC)
def iterate_vwls_mdvi(
    key: Array | None,
    model: LinearModel,
    regularization: Regularization,
    phase1: Allocation,
    variance_allocation: Allocation,
    samples_per_iteration,
    num_iterations,
    phase1_iterations,
    *,
    variance_floor=None,
    sampler: str = "multinomial",
    max_draws: int | None = None,
    design_tolerance=1e-3,
    design_max_iterations: int = 2000,
) -> VWLSRun:
    """:func:`vwls_mdvi` without per-iterate records (``gap``, ``samples`` are None).

    ``num_iterations`` and ``phase1_iterations`` may be traced: one compiled program serves
    every horizon. The same iterates and the same total calls as :func:`vwls_mdvi`.
    """
    _vwls_check(key, sampler, max_draws, phase1_iterations, num_iterations)
    floor = 1.0 / (1.0 - model.tabular.discount) if variance_floor is None else variance_floor
    state = solvers.mdvi_init(model.tabular, regularization)
    state, calls1 = iterate_ls_mdvi(
        model, regularization, state, phase1, phase1_iterations, key=key, sampler=sampler, max_draws=max_draws
    )
    fit = fit_variance_weights(
        None if key is None else jax.random.fold_in(key, VARIANCE_KEY_TAG),
        model, solvers.mdvi_value(state, regularization), variance_allocation,
        floor=floor, sampler=sampler, max_draws=max_draws,
        design_tolerance=design_tolerance, design_max_iterations=design_max_iterations,
    )  # fmt: skip
    phase2 = full_allocation(model, fit.design, samples_per_iteration, fit.weights)
    state, calls2 = iterate_ls_mdvi(
        model, regularization, state, phase2, num_iterations - phase1_iterations,
        start=phase1_iterations, key=key, sampler=sampler, max_draws=max_draws,
    )  # fmt: skip
    return VWLSRun(state=state, gap=None, samples=None, total_samples=calls1 + calls2 + fit.calls, fit=fit)
