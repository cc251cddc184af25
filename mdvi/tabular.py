"""Exact and sampled tabular solvers: policy evaluation, value and policy iteration, soft VI,
and Mirror Descent Value Iteration (MDVI) exact or with a generative model.

MDVI's loop and state live in :mod:`mdvi.loop`; here ``q_{k+1} = r + gamma P v_k`` is
computed with the exact transition operator ``P`` or, in sampled MDVI, the average over
``M`` generative-model draws per pair (:mod:`envs.generative`). Initialisation:
``q_0 = s_{-1} = s_0 = 0`` (``pi_{-1} = pi_0`` uniform).

All functions take a :class:`~envs.tabular.TabularModel` (``mdp.model()``) or a
:class:`~envs.tabular.TabularMDP`, are jittable, and the sampled ones are ``vmap``-able over
PRNG keys. Precision follows the model's dtype: build the model inside
``jax.enable_x64(True)`` for float64.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

from envs import generative
from envs.tabular import TabularMDP, TabularModel
from mdvi.divergences import KL, Divergence
from mdvi.loop import (  # noqa: F401  (re-exported: the tabular solvers' state and loop)
    MDVIRun,
    MDVIState,
    PolicyState,
    check_iterations,
    count_dtype,
    jit_variant,
    mdvi_init,
    mdvi_iteration,
    mdvi_loop,
    mdvi_policy,
    mdvi_update,
    mdvi_value,
)
from mdvi.regularized import Regularization, check_regularization, greedy_log_policy, soft_value

Array = jax.Array


def as_model(mdp: TabularMDP | TabularModel) -> TabularModel:
    return mdp.model() if isinstance(mdp, TabularMDP) else mdp


# ---------------------------------------------------------------------------------------------
# Bellman pieces
# ---------------------------------------------------------------------------------------------


def expected_next(model: TabularModel, values: Array) -> Array:
    """``(P v)(s, a) = sum_s' P(s' | s, a) v(s')`` for ``values`` of shape ``[S]`` -> ``[S, A]``."""
    chex.assert_shape(values, (model.num_states,))
    if model.dense is not None:
        return jnp.einsum("san,n->sa", model.dense, values)
    return jnp.sum(model.next_probs * values[model.next_states], axis=-1)


def policy_transition_matrix(model: TabularModel, policy: Array) -> Array:
    """``P_pi[s, s'] = sum_a pi(a | s) P(s' | s, a)`` as a dense ``[S, S]`` matrix."""
    chex.assert_shape(policy, model.reward.shape)
    if model.dense is not None:
        return jnp.einsum("sa,san->sn", policy, model.dense)
    S = model.num_states
    weights = policy[..., None] * model.next_probs
    rows = jnp.broadcast_to(jnp.arange(S)[:, None, None], model.next_states.shape)
    return jnp.zeros((S, S), weights.dtype).at[rows, model.next_states].add(weights)


def policy_evaluation(mdp: TabularMDP | TabularModel, policy: Array) -> Array:
    """Exact ``V^pi`` by the linear solve ``(I - gamma P_pi) V = r_pi`` (Bellman equation)."""
    model = as_model(mdp)
    P_pi = policy_transition_matrix(model, policy)
    r_pi = jnp.sum(policy * model.reward, axis=-1)
    eye = jnp.eye(model.num_states, dtype=P_pi.dtype)
    return jnp.linalg.solve(eye - model.discount * P_pi, r_pi)


def greedy_policy(q: Array) -> Array:
    """Deterministic-by-ties greedy policy: uniform over the maximisers of ``q`` per state."""
    return jnp.exp(greedy_log_policy(q, 0.0))


def bellman_optimality(model: TabularModel, v: Array) -> Array:
    """``q = r + gamma P v``."""
    return model.reward + model.discount * expected_next(model, v)


# ---------------------------------------------------------------------------------------------
# Classical solvers
# ---------------------------------------------------------------------------------------------


class VIResult(NamedTuple):
    q: Array  # [K, S, A]: q_k = r + gamma P v_{k-1}, k = 1..K, from v_0 = 0
    v: Array  # [K, S]: v_k = max_a q_k


@functools.partial(jax.jit, static_argnames="num_iterations")
def value_iteration(model: TabularModel, num_iterations: int) -> VIResult:
    """``num_iterations`` sweeps of value iteration from ``v_0 = 0`` (every iterate kept)."""

    def step(v, _):
        q = bellman_optimality(model, v)
        v = jnp.max(q, axis=-1)
        return v, (q, v)

    v0 = jnp.zeros(model.num_states, model.reward.dtype)
    _, (q, v) = jax.lax.scan(step, v0, None, length=num_iterations)
    return VIResult(q=q, v=v)


class OptimalSolution(NamedTuple):
    v: Array  # [S] V*
    q: Array  # [S, A] Q*
    policy: Array  # [S, A] an optimal deterministic policy
    iterations: Array  # policy-iteration sweeps used


@functools.partial(jax.jit, static_argnames="max_iterations")
def policy_iteration(model: TabularModel, max_iterations: int = 1000) -> OptimalSolution:
    """Howard's policy iteration: exact ``V*`` up to linear-solve rounding.

    Improvement keeps the current action unless another is better by more than a relative
    ``1e-12`` (avoids cycling between tied actions).
    """
    S, A = model.reward.shape

    def evaluate(actions):
        policy = jax.nn.one_hot(actions, A, dtype=model.reward.dtype)
        v = policy_evaluation(model, policy)
        return v, bellman_optimality(model, v)

    def cond(carry):
        _, _, _, changed, it = carry
        return changed & (it < max_iterations)

    def body(carry):
        actions, _, q, _, it = carry
        current = jnp.take_along_axis(q, actions[:, None], -1)[:, 0]
        best = jnp.argmax(q, axis=-1).astype(actions.dtype)
        tol = 1e-12 * jnp.maximum(1.0, jnp.max(jnp.abs(q)))
        improve = jnp.max(q, axis=-1) > current + tol
        new_actions = jnp.where(improve, best, actions)
        v, q = evaluate(new_actions)
        return new_actions, v, q, jnp.any(new_actions != actions), it + 1

    actions0 = jnp.zeros(S, jnp.int32)
    v0, q0 = evaluate(actions0)
    actions, v, q, _, it = jax.lax.while_loop(
        cond, body, (actions0, v0, q0, jnp.array(True), jnp.array(0))
    )
    return OptimalSolution(v=v, q=q, policy=jax.nn.one_hot(actions, A, dtype=q.dtype), iterations=it)


def optimal_values(mdp: TabularMDP | TabularModel) -> OptimalSolution:
    """``V*``, ``Q*`` and an optimal policy (policy iteration)."""
    return policy_iteration(as_model(mdp))


class SoftSolution(NamedTuple):
    q: Array  # [S, A] soft-optimal q
    v: Array  # [S] soft value
    log_policy: Array  # [S, A] optimal entropy-regularized policy
    residual: Array  # final sup-norm change
    iterations: Array


@functools.partial(jax.jit, static_argnames="max_iterations")
def soft_value_iteration(
    model: TabularModel, temperature, tolerance: float = 1e-10, max_iterations: int = 100_000
) -> SoftSolution:
    """Entropy-regularized optimum: iterate ``q = r + gamma P [kappa logsumexp(q / kappa)]``.

    A gamma-contraction; stops when the sup-norm change falls below ``tolerance``. The fixed
    point maximises ``E sum_t gamma^t (r + kappa H(pi(.|s_t)))`` (Haarnoja et al. 2017).
    """

    def cond(carry):
        _, residual, it = carry
        return (residual > tolerance) & (it < max_iterations)

    def body(carry):
        q, _, it = carry
        new_q = bellman_optimality(model, soft_value(q, temperature))
        return new_q, jnp.max(jnp.abs(new_q - q)), it + 1

    q0 = jnp.zeros_like(model.reward)
    q, residual, it = jax.lax.while_loop(
        cond, body, (q0, jnp.array(jnp.inf, q0.dtype), jnp.array(0))
    )
    return SoftSolution(
        q=q,
        v=soft_value(q, temperature),
        log_policy=greedy_log_policy(q, temperature),
        residual=residual,
        iterations=it,
    )


# ---------------------------------------------------------------------------------------------
# MDVI
# ---------------------------------------------------------------------------------------------


def exact_mdvi_step(model: TabularModel, regularization: Regularization, state: MDVIState) -> MDVIState:
    """One exact MDVI iteration: ``q_{k+1} = r + gamma P (w_k - alpha w_{k-1})``."""
    return mdvi_iteration(exact_step(model), regularization, state, 0)[0]


def exact_step(model: TabularModel):
    """The exact estimate ``q_{k+1} = r + gamma P v_k`` as a :data:`mdvi.loop.Step` (no calls)."""
    return lambda v, k: (bellman_optimality(model, v), 0)


def sampled_step(key: Array, model: TabularModel, samples_per_pair, sampler: str = "iid"):
    """``q_{k+1}(s, a) = r(s, a) + gamma (1/M) sum_m v_k(y_m)``, ``y_m ~ P(. | s, a)`` i.i.d.

    Kozuno et al. (2022), Alg. 1, with ``M`` generative-model draws per pair; iteration ``k``
    draws with ``fold_in(key, k)``. ``sampler="multinomial"`` draws the same sample means
    through successor counts (:func:`envs.generative.successor_counts`; ``M`` may then be
    traced). Calls per iteration: ``S * A * M``.
    """
    S, A = model.reward.shape

    def step(v, k):
        estimate = generative.sampled_expectation(jax.random.fold_in(key, k), model, v, samples_per_pair, sampler)
        return model.reward + model.discount * estimate, jnp.asarray(samples_per_pair, count_dtype()) * (S * A)

    return step


def policy_gap(model: TabularModel, v_star: Array, state: MDVIState | PolicyState, regularization: Regularization) -> Array:
    """``||V* - V^{pi_k}||_inf`` of the MDVI policy ``pi_k`` (sum form: ``softmax(beta s_k)``), evaluated exactly."""
    policy = jnp.exp(mdvi_policy(state, regularization))
    return jnp.max(jnp.abs(v_star - policy_evaluation(model, policy)))


def _check_run(model: TabularModel, regularization, v_star, key, samples_per_pair) -> None:
    check_regularization(regularization)
    if v_star is not None and jnp.shape(v_star) != (model.num_states,):
        raise ValueError(f"v_star must have shape ({model.num_states},) (one value per state), got {jnp.shape(v_star)}")
    if key is not None and samples_per_pair is None:
        raise ValueError("sampled MDVI needs samples_per_pair")


def mdvi_run(
    model: TabularModel, regularization: Regularization, state: MDVIState, num_iterations, *, start=0,
    key: Array | None = None, samples_per_pair=None, v_star: Array | None = None, sampler: str = "iid", record: bool = True,
) -> MDVIRun:  # fmt: skip
    """Advance MDVI by ``num_iterations`` from ``state`` (which has done ``start`` iterations).

    Exact when ``key`` is None, otherwise sampled with ``samples_per_pair`` draws per pair
    (``sampler``: ``"iid"`` or ``"multinomial"``, see :mod:`envs.generative`); the draws of
    iteration ``k`` use ``fold_in(key, k)``, so running in chunks gives the same result as one
    call. ``regularization`` is traced: a ``vmap`` over its values (a sweep of tau, kappa or
    beta) is one compiled program.

    Jitted as :func:`run_mdvi` (``record=True``: with ``v_star`` given each iterate's greedy
    policy is evaluated exactly and its gap ``||V* - V^{pi_k}||_inf`` recorded, with the calls
    of each iteration; ``num_iterations`` and ``samples_per_pair`` static) and as
    :func:`iterate_mdvi` (``record=False``: the same iterates, only the total calls;
    ``num_iterations``, ``start`` and, with the multinomial sampler, ``samples_per_pair`` may be
    traced, so one program serves every horizon and sample size).
    """
    if record:
        num_iterations = check_iterations("num_iterations", num_iterations)
    _check_run(model, regularization, v_star, key, samples_per_pair)
    step = exact_step(model) if key is None else sampled_step(key, model, samples_per_pair, sampler)
    evaluate = None if v_star is None else (lambda state: policy_gap(model, v_star, state, regularization))
    return mdvi_loop(step, regularization, state, start, num_iterations, evaluate=evaluate, record=record)


run_mdvi = jit_variant(mdvi_run, ("num_iterations", "samples_per_pair", "sampler"), record=True)
iterate_mdvi = jit_variant(mdvi_run, ("sampler",), record=False, v_star=None)


def exact_mdvi(
    mdp: TabularMDP | TabularModel,
    regularization: Regularization,
    num_iterations: int,
    v_star: Array | None = None,
    *,
    divergence: str | Divergence = KL,
    form: str | None = None,
) -> MDVIRun:
    """``num_iterations`` of exact MDVI from the standard initialisation.

    ``divergence`` regularizes the greedy step and the soft value (KL: MDVI proper); a non-KL
    divergence runs the policy form of the recursion, ``form`` forces one (see
    :func:`mdvi.loop.mdvi_init`).
    """
    model = as_model(mdp)
    check_regularization(regularization)
    init = mdvi_init(model, regularization, divergence, form)
    return run_mdvi(model, regularization, init, num_iterations, v_star=v_star)


def sampled_mdvi(
    key: Array,
    mdp: TabularMDP | TabularModel,
    regularization: Regularization,
    num_iterations: int,
    samples_per_pair: int,
    v_star: Array | None = None,
    sampler: str = "iid",
    *,
    divergence: str | Divergence = KL,
    form: str | None = None,
) -> MDVIRun:
    """Sampled MDVI with a generative model; ``jax.vmap`` over ``key`` runs many seeds at once.

    ``divergence`` and ``form`` as in :func:`exact_mdvi`.
    """
    model = as_model(mdp)
    check_regularization(regularization)
    return run_mdvi(
        model, regularization, mdvi_init(model, regularization, divergence, form), num_iterations,
        key=key, samples_per_pair=samples_per_pair, v_star=v_star, sampler=sampler,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Schedule
# ---------------------------------------------------------------------------------------------


class Schedule(NamedTuple):
    alpha: float
    num_iterations: int
    samples_per_pair: int


def kozuno_schedule(
    discount: float,
    epsilon: float,
    num_states: int,
    num_actions: int,
    delta: float = 0.1,
    iteration_constant: float = 1.0,
    sample_constant: float = 1.0,
) -> Schedule:
    """Parameter schedule of the shape Kozuno et al. (2022) prove minimax-optimal.

    ``alpha = gamma``; ``K = ceil(c_K H log(H / eps))`` iterations (enough for the
    ``alpha^K H`` bias term to fall below eps); ``M = ceil(c_M H^2 log(2 S A K / delta) / eps^2)``
    draws per pair and iteration, for ``K M S A = O~(S A H^3 / eps^2)`` calls in all.
    The orders in H and eps are the theorem's; the constants ``c_K, c_M`` are ours (default 1):
    the paper's exact constants were not available to us, so treat absolute sample counts as
    the scale of the bound, not the bound.
    """
    if not 0.0 <= discount < 1.0:
        raise ValueError(f"discount must lie in [0, 1), got {discount}")
    if not epsilon > 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}")
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must lie in (0, 1), got {delta}")
    H = 1.0 / (1.0 - discount)
    K = max(1, math.ceil(iteration_constant * H * math.log(max(H / epsilon, math.e))))
    M = max(1, math.ceil(sample_constant * H**2 * math.log(2 * num_states * num_actions * K / delta) / epsilon**2))
    return Schedule(alpha=discount, num_iterations=K, samples_per_pair=M)
