"""LS-MDVI and VWLS-MDVI: MDVI on linear MDPs with a generative model and a G-optimal design.

Kitamura et al. (2023, arXiv 2305.13185). Tabular MDVI in sum form (:mod:`mdvi.tabular`)
computes ``q_{k+1} = r + gamma P (w_k - alpha w_{k-1})``. In a linear MDP that function is
linear in ``phi``; the linear version replaces ``P (w_k - alpha w_{k-1})`` by a (weighted)
least-squares fit, over the support points ``(x_i, a_i)`` of a design, of the sampled targets

    y_i = r(x_i, a_i) + gamma (1 / n_i) sum_j (w_k - alpha w_{k-1})(s'_ij),   s'_ij ~ P(. | x_i, a_i),

    theta_{k+1} = argmin_theta sum_i n_i f_i (phi_i^T theta - y_i)^2,   q_{k+1} = phi^T theta_{k+1},

with ``n_i = ceil(rho_i N)`` draws at point ``i`` (the Lattimore-Szepesvari allocation of a
per-iteration budget ``N`` by the design ``rho``) and regression weights ``f_i``. The running
sum ``s_k = q_k + alpha s_{k-1}`` stays linear in ``phi``; the state, the update and the loop
are the ones of every MDVI variant (:mod:`mdvi.loop`): this module only supplies the
least-squares estimate of ``q_{k+1}``.

* **LS-MDVI**: ``f = 1`` and the G-optimal design of ``phi``.
* **Oracle-weighted LS-MDVI**: ``f* = 1 / (Var_{P}(V*)(x, a) + H)`` (the Maze code's
  ``f* = H / (Var + H)`` up to a constant, which a weighted regression ignores) and the
  G-optimal design of ``sqrt(f*) phi``: the upper reference.
* **VWLS-MDVI** (:func:`vwls_mdvi`), our statement of the two phases of Kitamura et al.
  (2023, Alg. 2, "VWLS-MDVI"; the constants of their theorem are not reproduced here):

  1. ``K_1`` iterations of LS-MDVI (``f = 1``), enough for a roughly ``sqrt(H)``-accurate value
     ``v_hat = w_{K_1} - alpha w_{K_1 - 1}`` (the notebook uses ``K_1 = 0.2 K``);
  2. variance fit: with ``N_sigma`` fresh draws allocated by the unweighted design, regress the
     sample means of ``v_hat(s')`` and ``v_hat(s')^2`` on ``phi`` (both ``P v_hat`` and
     ``P v_hat^2`` are linear in ``phi``) and set
     ``sigma_hat^2 = clip(phi^T theta_2 - (phi^T theta_1)^2, 0, H^2)``;
  3. floor and weights: ``f = 1 / (sigma_hat^2 + H)`` (the additive ``+H`` floor: from
     ``sqrt(Var v*) <= sqrt(Var v_hat) + ||v_hat - v*||_inf`` (the triangle inequality for the
     standard deviation), ``Var v* <= 2 Var v_hat + 2 ||v_hat - v*||^2`` and the floor ``H``
     covers the error term of a ``sqrt(H)``-accurate ``v_hat``);
  4. the G-optimal design of ``sqrt(f) phi`` (computed inside the jitted run,
     :func:`theory.design.design_weights`) and ``K - K_1`` iterations of weighted LS-MDVI.

Every generative-model call is counted: ``samples[k]`` per iteration plus the variance fit.
How the draws are made travels as one :class:`envs.generative.Sampling` record
(``"multinomial"``: each point's ``n_i`` next states as one count vector, cost free of
``n_i``; ``"iid"``: one by one, with its static draw cap); the VWLS phase lengths as
:class:`VWLSPhases` and the variance-fit settings as :class:`VarianceFitSettings`. ``key=None``
regresses on exact expectations (the infinite-sample limit). Everything is jittable and
``vmap``-able over PRNG keys; precision follows the model's dtype.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from envs import generative
from envs.generative import DEFAULT_SAMPLING, Sampling
from envs.linear import LinearMDP
from envs.tabular import TabularModel
from mdvi import loop
from mdvi import tabular as solvers
from mdvi.divergences import KL, Divergence
from mdvi.regularized import Regularization, check_regularization
from theory.design import Design, allocation_counts, column_space, design_weights, optimal_design

Array = jax.Array

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
        draws=jnp.asarray(draws, loop.count_dtype()),
        weights=jnp.asarray(weights, dtype),
    )


def full_allocation(model: LinearModel, design_weights_: Array, samples_per_iteration, regression_weights: Array) -> Allocation:
    """In-jit allocation over every pair (design weights may be traced): zero draws off the support."""
    states, actions = generative.all_pairs(model.tabular)
    draws = allocation_counts(design_weights_, samples_per_iteration).astype(loop.count_dtype())
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


def next_means(key: Array | None, model: LinearModel, allocation: Allocation, values: Array, sampling: Sampling) -> Array:
    """Estimates of ``(P values)(x_i, a_i)`` at the allocation's points: ``[m]`` or ``[V, m]``.

    ``key=None`` returns the exact expectations (regression on expectations, the
    infinite-sample limit); otherwise sample means of ``draws_i`` calls.
    """
    if key is None:
        expected = jax.vmap(functools.partial(solvers.expected_next, model.tabular))(jnp.atleast_2d(values))
        means = expected[:, allocation.states, allocation.actions]
        return means if values.ndim == 2 else means[0]
    return generative.sampled_means_at(
        key, model.tabular, allocation.states, allocation.actions, allocation.draws, values, sampling
    )


def ls_step(key: Array | None, model: LinearModel, allocation: Allocation, sampling: Sampling):
    """The least-squares estimate of ``q_{k+1}`` (module docstring) as a :data:`mdvi.loop.Step`.

    Iteration ``k`` draws with ``fold_in(key, k)`` (the convention of tabular sampled MDVI);
    the Gram matrix of the fixed allocation is factored once. Calls per iteration:
    ``sum(allocation.draws)`` (0 if ``key`` is None).
    """
    prediction = prediction_operator(model, allocation)
    reward = model.tabular.reward[allocation.states, allocation.actions]
    calls = 0 if key is None else allocation.calls

    def step(v, k):
        step_key = None if key is None else jax.random.fold_in(key, k)
        targets = reward + model.tabular.discount * next_means(step_key, model, allocation, v, sampling)
        return (prediction @ targets).reshape(model.tabular.reward.shape), calls

    return step


# ---------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------


def _check_linear(key, regularization, sampling: Sampling, v_star, model: LinearModel) -> None:
    check_regularization(regularization)
    if not isinstance(sampling, Sampling):
        raise ValueError(f"sampling must be an envs.generative.Sampling, got {sampling!r}")
    if key is not None:
        sampling.check()
    S = model.tabular.num_states
    if v_star is not None and jnp.shape(v_star) != (S,):
        raise ValueError(f"v_star must have shape ({S},) (one value per state), got {jnp.shape(v_star)}")


def ls_mdvi_run(
    model: LinearModel,
    regularization: Regularization,
    state: loop.MDVIState,
    allocation: Allocation,
    num_iterations,
    *,
    start=0,
    key: Array | None = None,
    sampling: Sampling = DEFAULT_SAMPLING,
    v_star: Array | None = None,
    record: bool = True,
) -> loop.MDVIRun:
    """Advance (weighted) LS-MDVI by ``num_iterations`` from ``state`` (``start`` iterations done).

    Exact (regression on expectations) when ``key`` is None. Iteration ``k`` draws with
    ``fold_in(key, k)``, the convention of :func:`mdvi.tabular.run_mdvi`, so with one-hot
    features, every pair in the allocation and the iid sampler it sees the very samples of
    tabular sampled MDVI. Jitted as :func:`run_ls_mdvi` (``record=True``: each iterate's gap,
    with ``v_star``, and calls; ``num_iterations`` static) and :func:`iterate_ls_mdvi`
    (``record=False``: the same iterates and total calls; ``num_iterations`` may be traced).
    """
    if record:
        num_iterations = loop.check_iterations("num_iterations", num_iterations)
    _check_linear(key, regularization, sampling, v_star, model)
    evaluate = None if v_star is None else (lambda state: solvers.policy_gap(model.tabular, v_star, state, regularization))
    step = ls_step(key, model, allocation, sampling)
    return loop.mdvi_loop(step, regularization, state, start, num_iterations, evaluate=evaluate, record=record)


run_ls_mdvi = loop.jit_variant(ls_mdvi_run, ("num_iterations", "sampling"), record=True)
iterate_ls_mdvi = loop.jit_variant(ls_mdvi_run, ("sampling",), record=False, v_star=None)


def ls_mdvi(
    key: Array | None,
    model: LinearModel,
    regularization: Regularization,
    allocation: Allocation,
    num_iterations: int,
    *,
    sampling: Sampling = DEFAULT_SAMPLING,
    v_star: Array | None = None,
    divergence: str | Divergence = KL,
    form: str | None = None,
) -> loop.MDVIRun:
    """(Weighted) LS-MDVI from the standard initialisation; ``vmap`` over ``key`` for seeds.

    ``divergence`` regularizes the greedy step and the soft value; a non-KL divergence runs the
    policy form of the recursion (:func:`mdvi.loop.mdvi_init`, ``form``).
    """
    state = loop.mdvi_init(model.tabular, check_regularization(regularization), divergence, form)
    return run_ls_mdvi(model, regularization, state, allocation, num_iterations, key=key, sampling=sampling, v_star=v_star)


# ---------------------------------------------------------------------------------------------
# Variance weights
# ---------------------------------------------------------------------------------------------


def horizon(model: LinearModel) -> Array:
    """``H = 1 / (1 - gamma)``: the variance clip ``H^2`` and the default additive floor."""
    return 1.0 / (1.0 - model.tabular.discount)


def next_state_variance(model: TabularModel, values: Array) -> Array:
    """Exact ``Var_{s' ~ P(. | s, a)} values(s')`` for every pair: ``[S, A]``."""
    mean = solvers.expected_next(model, values)
    second = solvers.expected_next(model, values * values)
    return jnp.maximum(second - mean * mean, 0.0)


def variance_weights(variance: Array, floor) -> Array:
    """Regression weights ``f = 1 / (variance + floor)`` (the additive ``+H`` floor)."""
    return 1.0 / (variance + floor)


@dataclasses.dataclass(frozen=True)
class VarianceFitSettings:
    """Settings of VWLS-MDVI's variance fit (steps 2-4 of the module docstring).

    Attributes:
      floor: the additive variance floor (None: ``H = 1 / (1 - gamma)``).
      design_tolerance, design_max_iterations: of the in-jit weighted G-optimal design.
    """

    floor: float | None = None
    design_tolerance: float = 1e-3
    design_max_iterations: int = 2000

    def floor_for(self, model: LinearModel):
        """The floor in use: ``floor``, or ``H`` when it is None (computed here, once)."""
        return horizon(model) if self.floor is None else self.floor


DEFAULT_FIT = VarianceFitSettings()

def oracle_weights(model: LinearModel, v_star: Array, floor=None) -> Array:
    """The oracle ``f* = 1 / (Var_P(V*) + H)`` (``floor`` defaults to ``H = 1 / (1 - gamma)``)."""
    floor = VarianceFitSettings(floor).floor_for(model)
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
    settings: VarianceFitSettings = DEFAULT_FIT,
    sampling: Sampling = DEFAULT_SAMPLING,
) -> VarianceFit:
    """VWLS-MDVI steps 2-4 (module docstring): variance regression, floor, weighted design.

    Regresses the sample means of ``v_hat(s')`` and ``v_hat(s')^2`` (the same draws) on
    ``phi`` with unweighted least squares over ``allocation``'s draws, sets
    ``sigma_hat^2 = clip(phi^T theta_2 - (phi^T theta_1)^2, 0, H^2)``, ``f = 1 / (sigma_hat^2 +
    floor)`` and computes the design of ``sqrt(f) phi`` in-jit. ``key=None``: exact moments.
    """
    moments = next_means(key, model, allocation, jnp.stack([v_hat, v_hat * v_hat]), sampling)
    features = model.features[allocation.states, allocation.actions]
    theta = weighted_least_squares(features, allocation.draws.astype(features.dtype), moments)
    fitted = jnp.einsum("sar,vr->vsa", model.features, theta)
    variance = jnp.clip(fitted[1] - fitted[0] ** 2, 0.0, horizon(model) ** 2)
    weights = variance_weights(variance, settings.floor_for(model))
    weighted_features = jnp.sqrt(weights).reshape(-1, 1) * model.flat_features
    design_state = design_weights(weighted_features, settings.design_tolerance, settings.design_max_iterations)
    calls = jnp.asarray(0 if key is None else allocation.calls, loop.count_dtype())
    return VarianceFit(variance, weights, design_state.weights, design_state.g_over_d, calls)


class VWLSPhases(NamedTuple):
    """VWLS-MDVI's schedule: ``K`` iterations in all, the first ``K_1`` unweighted.

    Python ints for :func:`vwls_mdvi` (static: the records have length ``K``); may be traced
    in :func:`iterate_vwls_mdvi` (one compiled program for every horizon).
    """

    num_iterations: int
    phase1_iterations: int

    def check(self) -> VWLSPhases:
        K, K1 = self
        if isinstance(K, (int, np.integer)) and isinstance(K1, (int, np.integer)) and not 0 <= K1 <= K:
            raise ValueError(f"need 0 <= phase1_iterations <= num_iterations, got {K1}, {K}")
        return self


class VWLSRun(NamedTuple):
    state: loop.MDVIState  # after all K iterations
    gap: Array | None  # [K] ||V* - V^{pi_k}||_inf (NaN without v_star); None from iterate_vwls_mdvi
    samples: Array | None  # [K] calls of each iteration (phase 1, then phase 2); None likewise
    total_samples: Array  # every call: both phases and the variance fit
    fit: VarianceFit


def vwls_mdvi_run(
    key: Array | None,
    model: LinearModel,
    regularization: Regularization,
    phase1: Allocation,
    variance_allocation: Allocation,
    samples_per_iteration,
    phases: VWLSPhases,
    *,
    sampling: Sampling = DEFAULT_SAMPLING,
    settings: VarianceFitSettings = DEFAULT_FIT,
    v_star: Array | None = None,
    record: bool = True,
    divergence: str | Divergence = KL,
) -> VWLSRun:
    """VWLS-MDVI (module docstring): LS phase, variance fit, weighted design, weighted phase.

    Args:
      key: PRNG key (None: exact, regression on expectations throughout).
      phase1: unweighted allocation of the first ``phases.phase1_iterations`` iterations.
      variance_allocation: draws of the variance fit (its regression weights are ignored: the
        fit is unweighted); drawn with ``fold_in(key, 2**31 - 1)``.
      samples_per_iteration: budget ``N`` of each phase-2 iteration, allocated as
        ``ceil(rho_f N)`` over the weighted design ``rho_f``.
      phases: ``VWLSPhases(K, K_1)``.
      sampling: the sampler; ``"iid"`` needs a ``max_draws`` covering phase 1, the variance
        fit and ``ceil(N)`` of phase 2.
      settings: the variance fit's floor and design settings.
      v_star: if given (and recording), each iterate's gap is recorded.
      divergence: the regularizer of the greedy step (static); non-KL runs the policy form.

    Jitted as :func:`vwls_mdvi` (``record=True``: per-iterate gaps and calls; ``phases`` Python
    ints, static) and :func:`iterate_vwls_mdvi` (``record=False``: ``gap`` and ``samples`` are
    None; ``phases`` may be traced, one compiled program for every horizon). Both give the
    same iterates and the same total calls.
    """
    K, K1 = phases.check()
    state = loop.mdvi_init(model.tabular, check_regularization(regularization), divergence)
    common = dict(key=key, sampling=sampling, v_star=v_star, record=record)
    run1 = ls_mdvi_run(model, regularization, state, phase1, K1, start=0, **common)
    fit_key = None if key is None else jax.random.fold_in(key, VARIANCE_KEY_TAG)
    v_hat = loop.mdvi_value(run1.state, regularization)
    fit = fit_variance_weights(fit_key, model, v_hat, variance_allocation, settings, sampling)
    phase2 = full_allocation(model, fit.design, samples_per_iteration, fit.weights)
    run2 = ls_mdvi_run(model, regularization, run1.state, phase2, K - K1, start=K1, **common)
    gap = samples = None
    if record:
        gap, samples = jnp.concatenate([run1.gap, run2.gap]), jnp.concatenate([run1.samples, run2.samples])
    total = run1.total_samples + run2.total_samples + fit.calls
    return VWLSRun(state=run2.state, gap=gap, samples=samples, total_samples=total, fit=fit)


vwls_mdvi = loop.jit_variant(vwls_mdvi_run, ("phases", "sampling", "settings", "divergence"), record=True)
iterate_vwls_mdvi = loop.jit_variant(vwls_mdvi_run, ("sampling", "settings", "divergence"), record=False, v_star=None)
