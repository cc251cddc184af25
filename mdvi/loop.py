"""The one MDVI loop: state, update and the scan / chunked loop used by every MDVI variant.

MDVI in its sum form (Vieillard et al. 2020, "Leverage the Average", Thm 1; Kozuno et al.
2022, arXiv 2205.14211, Eq. 3):

    s_k     = q_k + alpha s_{k-1},           pi_k = softmax(beta s_k),
    w_k     = (1/beta) log sum_a exp(beta s_k(., a))        (the core's soft value),
    v_k     = w_k - alpha w_{k-1},
    q_{k+1} = r + gamma P v_k.

``v_k`` equals ``<pi_k, q_k - tau log(pi_k / pi_{k-1}) - kappa log pi_k>``, the regularized
value of the policy form.

The sum form is specific to KL. For any other divergence ``D`` (:mod:`mdvi.divergences`) the
loop runs the general recursion, the *policy form* (:class:`PolicyState`):

    pi_k = argmax_pi <pi, q_k> - (1/beta) D(pi || pi_{k-1}^alpha),
    v_k  = the optimal value of the same problem,           q_{k+1} = r + gamma P v_k,

which for KL reproduces the sum form iterate for iterate. With a sparse divergence and
``alpha > 0`` the support of ``pi_k`` can only shrink (``pi_{k-1} = 0`` is outside the
reference's support); ``alpha = 0`` is f-regularized value iteration (Tsallis VI for the alpha
divergences with the unit reference). The variants differ only in how ``r + gamma P v_k`` is estimated:
exactly, from ``M`` generative-model draws per pair (tabular sampled MDVI), or by a
(weighted) least-squares fit of sampled targets at a design's points (LS- and VWLS-MDVI,
Kitamura et al. 2023, arXiv 2305.13185). Each variant supplies that estimate as a *step*

    step(v_k, k) -> (q_{k+1}, calls),

and :func:`mdvi_loop` does the rest: the update of ``(s, w)``, the optional per-iterate
records (the policy's gap, the calls) under ``lax.scan``, or a record-free ``fori_loop``
whose length may be traced (one compiled program for every horizon). :func:`run_in_chunks`
drives a jitted loop in chunks from the host (progress bars) with the same result as one
call, because iteration ``k`` always draws with ``fold_in(key, k)``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mdvi.divergences import KL, Divergence, get_divergence
from mdvi.regularized import Regularization, greedy_log_policy, mdvi_greedy_step, mdvi_soft_value, soft_value

Array = jax.Array

Step = Callable[[Array, Array], tuple[Array, Array]]  # (v_k [S], k) -> (q_{k+1} [S, A], calls)


class MDVIState(NamedTuple):
    q: Array  # [S, A] q_k
    s: Array  # [S, A] s_k = q_k + alpha s_{k-1}
    w: Array  # [S] w_k = soft value of s_k at temperature 1/beta
    w_prev: Array  # [S] w_{k-1}


@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True, eq=False)
class PolicyState:
    """MDVI state of the policy form: ``q_k``, ``log pi_k``, ``log pi_{k-1}``.

    A pytree whose leaves are the three arrays; the divergence is static (part of the tree
    structure), so a jitted loop compiles once per divergence.
    """

    q: Array  # [S, A] q_k
    log_policy: Array  # [S, A] log pi_k
    log_prev_policy: Array  # [S, A] log pi_{k-1}
    divergence: Divergence

    def tree_flatten(self):
        return (self.q, self.log_policy, self.log_prev_policy), self.divergence

    @classmethod
    def tree_unflatten(cls, divergence, leaves):
        return cls(*leaves, divergence=divergence)


FORMS = ("sum", "policy")


class MDVIRun(NamedTuple):
    state: MDVIState | PolicyState  # after the last iteration
    gap: Array | None  # [K] ||V* - V^{pi_k}||_inf of each iterate (NaN if no V*); None if not recorded
    samples: Array | None  # [K] generative-model calls of each iteration; None if not recorded
    total_samples: Array  # calls of all K iterations


def count_dtype():
    """Integer type of sample counts (int64 under x64: totals can pass 2^31)."""
    return jnp.int64 if jax.config.jax_enable_x64 else jnp.int32


def check_form(divergence: str | Divergence = KL, form: str | None = None) -> tuple[Divergence, str]:
    """``(divergence, form)``: ``form=None`` picks the sum form for KL, the policy form otherwise."""
    divergence = get_divergence(divergence)
    if form is None:
        form = "sum" if divergence is KL else "policy"
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS} (or None), got {form!r}")
    if form == "sum" and divergence is not KL:
        raise ValueError(f"form='sum' holds only for the KL divergence, got divergence {divergence.name!r}; use 'policy'")
    return divergence, form


def mdvi_init(
    model, regularization: Regularization, divergence: str | Divergence = KL, form: str | None = None
) -> MDVIState | PolicyState:
    """``q_0 = s_0 = s_{-1} = 0``: uniform ``pi_0``, ``w_0 = w_{-1}`` = soft value of 0.

    ``model``: anything with a ``reward`` array ``[S, A]`` (a tabular model). ``divergence``
    and ``form`` choose the recursion (:func:`check_form`): the sum form (KL only) returns an
    :class:`MDVIState`, the policy form a :class:`PolicyState` with ``q_0 = 0`` and
    ``pi_{-1} = pi_0`` uniform.
    """
    divergence, form = check_form(divergence, form)
    zeros = jnp.zeros_like(model.reward)
    if form == "policy":
        log_uniform = jnp.full_like(zeros, -jnp.log(zeros.shape[-1]))
        log_policy = mdvi_greedy_step(zeros, log_uniform, regularization, divergence)
        return PolicyState(q=zeros, log_policy=log_policy, log_prev_policy=log_uniform, divergence=divergence)
    w0 = soft_value(zeros, regularization.temperature)
    return MDVIState(q=zeros, s=zeros, w=w0, w_prev=w0)


def mdvi_value(state: MDVIState | PolicyState, regularization: Regularization) -> Array:
    """``v_k = w_k - alpha w_{k-1}``: the regularized value of ``pi_k`` under ``q_k``.

    Policy form: the conjugate ``max_pi <pi, q_k> - (1/beta) D(pi || pi_{k-1}^alpha)``.
    """
    if isinstance(state, PolicyState):
        return mdvi_soft_value(state.q, state.log_prev_policy, regularization, state.divergence)
    return state.w - regularization.alpha * state.w_prev


def mdvi_update(state: MDVIState | PolicyState, q_next: Array, regularization: Regularization):
    """Fold a new ``q_{k+1}`` into the running sum and its soft value.

    Policy form: the greedy step ``pi_{k+1}`` against the reference ``pi_k^alpha``.
    """
    if isinstance(state, PolicyState):
        log_policy = mdvi_greedy_step(q_next, state.log_policy, regularization, state.divergence)
        return PolicyState(q=q_next, log_policy=log_policy, log_prev_policy=state.log_policy, divergence=state.divergence)
    s_next = q_next + regularization.alpha * state.s
    w_next = soft_value(s_next, regularization.temperature)
    return MDVIState(q=q_next, s=s_next, w=w_next, w_prev=state.w)


def mdvi_policy(state: MDVIState | PolicyState, regularization: Regularization) -> Array:
    """``log pi_k = log softmax(beta s_k)`` (hard max when ``beta = inf``); policy form: stored."""
    if isinstance(state, PolicyState):
        return state.log_policy
    return greedy_log_policy(state.s, regularization.temperature)


def mdvi_iteration(step: Step, regularization: Regularization, state: MDVIState, k) -> tuple[MDVIState, Array]:
    """One MDVI iteration: ``q_{k+1} = step(v_k, k)``, then the update; returns the calls too."""
    q_next, calls = step(mdvi_value(state, regularization), k)
    return mdvi_update(state, q_next, regularization), jnp.asarray(calls, count_dtype())


def mdvi_loop(
    step: Step,
    regularization: Regularization,
    state: MDVIState,
    start,
    num_iterations,
    *,
    evaluate: Callable[[MDVIState], Array] | None = None,
    record: bool = True,
) -> MDVIRun:
    """Advance MDVI by ``num_iterations`` from ``state`` (which has done ``start`` iterations).

    ``record=True``: a ``lax.scan`` keeping, per iterate, ``evaluate(state)`` (NaN without
    ``evaluate``) and the calls; ``num_iterations`` must then be a Python int.
    ``record=False``: a ``fori_loop`` keeping only the total calls; ``start`` and
    ``num_iterations`` may be traced.
    """
    if record:

        def body(state, k):
            state, calls = mdvi_iteration(step, regularization, state, k)
            gap = jnp.array(jnp.nan, state.q.dtype) if evaluate is None else evaluate(state)
            return state, (gap, calls)

        state, (gap, samples) = jax.lax.scan(body, state, jnp.arange(num_iterations) + start)
        return MDVIRun(state=state, gap=gap, samples=samples, total_samples=jnp.sum(samples))

    def fori_body(k, carry):
        state, total = carry
        state, calls = mdvi_iteration(step, regularization, state, k)
        return state, total + calls

    carry = (state, jnp.zeros((), count_dtype()))
    state, total = jax.lax.fori_loop(start, start + num_iterations, fori_body, carry)
    return MDVIRun(state=state, gap=None, samples=None, total_samples=total)


def jit_variant(body: Callable, static_argnames: tuple[str, ...], **bound) -> Callable:
    """``jax.jit`` of ``body`` with some keyword arguments bound: the recorded entry point
    (``record=True``, static lengths) and the record-free one (``record=False``, traced
    lengths) of a solver are two variants of one body, with its signature and docstring."""
    return jax.jit(functools.update_wrapper(functools.partial(body, **bound), body), static_argnames=static_argnames)


def check_iterations(name: str, value) -> int:
    """A concrete iteration count: an integer >= 0 (``ValueError`` naming ``name`` otherwise)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value}")
    return int(value)


def chunks(total: int, chunk: int) -> Iterator[tuple[int, int]]:
    """``(start, size)`` of consecutive chunks of at most ``chunk`` iterations covering ``total``."""
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    for start in range(0, total, chunk):
        yield start, min(chunk, total - start)


def run_in_chunks(
    advance: Callable[[MDVIState, int, int], MDVIRun],
    state: MDVIState,
    num_iterations: int,
    chunk: int,
    on_chunk: Callable[[int], None] | None = None,
) -> MDVIRun:
    """Drive a recorded loop from the host: ``advance(state, start, size) -> MDVIRun`` per chunk.

    Records are concatenated on their last axis (so a leading seed axis of a vmapped
    ``advance`` is kept) and brought to the host; ``on_chunk(size)`` runs after each chunk
    (a progress bar). Equal to one call of ``num_iterations`` when ``advance`` draws
    iteration ``k`` from ``fold_in(key, k)``.
    """
    gaps, samples = [], []
    for start, size in chunks(num_iterations, chunk):
        run = advance(state, start, size)
        state = run.state
        gaps.append(np.asarray(run.gap))
        samples.append(np.asarray(run.samples))
        if on_chunk is not None:
            on_chunk(size)
    samples = np.concatenate(samples, axis=-1)
    return MDVIRun(state=state, gap=np.concatenate(gaps, axis=-1), samples=samples, total_samples=samples.sum(-1))
