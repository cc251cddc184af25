"""The one MDVI loop: state, update and the scan / chunked loop used by every MDVI variant.

MDVI in its sum form (Vieillard et al. 2020, "Leverage the Average", Thm 1; Kozuno et al.
2022, arXiv 2205.14211, Eq. 3):

    s_k     = q_k + alpha s_{k-1},           pi_k = softmax(beta s_k),
    w_k     = (1/beta) log sum_a exp(beta s_k(., a))        (the core's soft value),
    v_k     = w_k - alpha w_{k-1},
    q_{k+1} = r + gamma P v_k.

``v_k`` equals ``<pi_k, q_k - tau log(pi_k / pi_{k-1}) - kappa log pi_k>``, the regularized
value of the policy form. The variants differ only in how ``r + gamma P v_k`` is estimated:
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

import functools
from collections.abc import Callable, Iterator
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mdvi.regularized import Regularization, greedy_log_policy, soft_value

Array = jax.Array

Step = Callable[[Array, Array], tuple[Array, Array]]  # (v_k [S], k) -> (q_{k+1} [S, A], calls)


class MDVIState(NamedTuple):
    q: Array  # [S, A] q_k
    s: Array  # [S, A] s_k = q_k + alpha s_{k-1}
    w: Array  # [S] w_k = soft value of s_k at temperature 1/beta
    w_prev: Array  # [S] w_{k-1}


class MDVIRun(NamedTuple):
    state: MDVIState  # after the last iteration
    gap: Array | None  # [K] ||V* - V^{pi_k}||_inf of each iterate (NaN if no V*); None if not recorded
    samples: Array | None  # [K] generative-model calls of each iteration; None if not recorded
    total_samples: Array  # calls of all K iterations


def count_dtype():
    """Integer type of sample counts (int64 under x64: totals can pass 2^31)."""
    return jnp.int64 if jax.config.jax_enable_x64 else jnp.int32


def mdvi_init(model, regularization: Regularization) -> MDVIState:
    """``q_0 = s_0 = s_{-1} = 0``: uniform ``pi_0``, ``w_0 = w_{-1}`` = soft value of 0.

    ``model``: anything with a ``reward`` array ``[S, A]`` (a tabular model).
    """
    zeros = jnp.zeros_like(model.reward)
    w0 = soft_value(zeros, regularization.temperature)
    return MDVIState(q=zeros, s=zeros, w=w0, w_prev=w0)


def mdvi_value(state: MDVIState, regularization: Regularization) -> Array:
    """``v_k = w_k - alpha w_{k-1}``: the regularized value of ``pi_k`` under ``q_k``."""
    return state.w - regularization.alpha * state.w_prev


def mdvi_update(state: MDVIState, q_next: Array, regularization: Regularization) -> MDVIState:
    """Fold a new ``q_{k+1}`` into the running sum and its soft value."""
    s_next = q_next + regularization.alpha * state.s
    w_next = soft_value(s_next, regularization.temperature)
    return MDVIState(q=q_next, s=s_next, w=w_next, w_prev=state.w)


def mdvi_policy(state: MDVIState, regularization: Regularization) -> Array:
    """``log pi_k = log softmax(beta s_k)`` (hard max when ``beta = inf``)."""
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
