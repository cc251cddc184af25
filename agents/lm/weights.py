"""Weight-space operations on parameter pytrees: averages, EMA and linear interpolation.

Pure functions of pytrees with equal structure (any leaves of float arrays), for model soups
(Wortsman et al. 2022), EMA anchors (WARP, Rame et al. 2024, Sec. 3.1) and linear interpolation
towards an initialisation (LITI, ibid.). Interpolation weights may be traced.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp


def _check_same_structure(trees: Sequence) -> None:
    if not trees:
        raise ValueError("trees must hold at least one pytree")
    first = jax.tree.structure(trees[0])
    for i, tree in enumerate(trees[1:], start=1):
        if jax.tree.structure(tree) != first:
            raise ValueError(f"trees[{i}] has another structure than trees[0]")


def average(trees: Sequence, weights=None):
    """The weighted mean ``sum_i w_i theta_i / sum_i w_i`` (uniform weights by default)."""
    trees = list(trees)
    _check_same_structure(trees)
    weights = jnp.ones(len(trees)) if weights is None else jnp.asarray(weights, dtype=jnp.float32)
    if weights.shape != (len(trees),):
        raise ValueError(f"weights must have shape [{len(trees)}] (one per tree), got {weights.shape}")
    weights = weights / jnp.sum(weights)

    def mean(*leaves):
        stacked = jnp.stack(leaves)
        return jnp.tensordot(weights.astype(stacked.dtype), stacked, axes=1)

    return jax.tree.map(mean, *trees)


def interpolate(start, end, fraction):
    """``(1 - fraction) * start + fraction * end`` leaf by leaf (exactly ``start`` at 0, ``end`` at 1)."""
    _check_same_structure([start, end])
    return jax.tree.map(lambda a, b: (1.0 - fraction) * a + fraction * b, start, end)


def ema(new, old, step_size):
    """One EMA step ``step_size * new + (1 - step_size) * old`` (``optax.incremental_update``'s rule)."""
    _check_same_structure([new, old])
    return jax.tree.map(lambda n, o: step_size * n + (1.0 - step_size) * o, new, old)
