"""A generative model (simulator) of a tabular MDP: i.i.d. next states for chosen pairs.

Every function here says exactly how many simulator calls it makes; the solvers add these
up, so reported sample counts are exact. One call = one next state drawn for one (s, a).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from envs.tabular import TabularModel

Array = jax.Array

# Above this many successors per pair, inverse-CDF lookup uses binary search instead of a
# full comparison against the CDF.
_COMPARE_MAX_SUCCESSORS = 64


def _inverse_cdf(cdf: Array, uniforms: Array) -> Array:
    """Index ``j`` with ``cdf[j-1] <= u < cdf[j]`` for each uniform (clipped to the last)."""
    n = cdf.shape[-1]
    if n <= _COMPARE_MAX_SUCCESSORS:
        idx = jnp.sum(uniforms[..., :, None] >= cdf[..., None, :], axis=-1)
    else:
        flat_cdf = cdf.reshape(-1, n)
        flat_u = uniforms.reshape(flat_cdf.shape[0], -1)
        idx = jax.vmap(lambda c, u: jnp.searchsorted(c, u, side="right"))(flat_cdf, flat_u)
        idx = idx.reshape(uniforms.shape)
    return jnp.minimum(idx, n - 1)


def sample_next_states(key: Array, model: TabularModel, samples_per_pair: int) -> Array:
    """Draw ``M`` i.i.d. next states for every pair: ``[S, A, M]`` state indices.

    Calls: ``S * A * M``.
    """
    if samples_per_pair < 1:
        raise ValueError(f"samples_per_pair must be >= 1, got {samples_per_pair}")
    S, A, _ = model.next_states.shape
    cdf = jnp.cumsum(model.next_probs, axis=-1)
    uniforms = jax.random.uniform(key, (S, A, samples_per_pair), dtype=cdf.dtype)
    slot = _inverse_cdf(cdf, uniforms)
    return jnp.take_along_axis(model.next_states, slot, axis=-1)


def sampled_expectation(
    key: Array, model: TabularModel, values: Array, samples_per_pair: int
) -> Array:
    """Monte-Carlo estimate of ``E_{s' ~ P(s, a)} values(s')`` for every pair.

    Args:
      values: ``[S]`` or ``[V, S]`` (several functions of the next state, estimated from the
        same draws, e.g. ``v`` and ``v**2``).
    Returns:
      ``[S, A]`` or ``[V, S, A]`` sample means over ``M`` draws per pair. Calls: ``S * A * M``.
    """
    chex.assert_rank(values, {1, 2})
    next_states = sample_next_states(key, model, samples_per_pair)
    return jnp.mean(values[..., next_states], axis=-1)


def calls_per_sweep(model: TabularModel, samples_per_pair: int) -> int:
    """Simulator calls made by one :func:`sampled_expectation` over all pairs."""
    S, A = model.reward.shape
    return S * A * samples_per_pair
