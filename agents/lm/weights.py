"""Weight-space operations on parameter pytrees: averages, EMA, interpolation, task vectors and SLERP.

Pure functions of pytrees with equal structure (any leaves of float arrays), for model soups
(Wortsman et al. 2022), reward-model averaging (WARM), and WARP (Rame et al. 2024, "WARP: On the
Benefits of Weight Averaged Rewarded Policies", arXiv 2406.16768):

* EMA anchor (Sec. 3.1): ``theta_ema <- (1 - mu) theta_ema + mu theta`` (:func:`ema`);
* SLERP of task vectors (Sec. 3.2): ``delta_m = theta_m - theta_init`` (:func:`task_vector`),
  merged per parameter tensor by spherical interpolation (:func:`slerp`, :func:`slerp_merge`),
  falling back to linear interpolation when two tensors are nearly parallel;
* LITI (Sec. 3.3): ``theta_init + eta * delta`` (:func:`liti`).

Interpolation weights may be traced.
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


def task_vector(theta, theta_init):
    """``delta = theta - theta_init`` leaf by leaf (WARP, Sec. 3.2)."""
    _check_same_structure([theta, theta_init])
    return jax.tree.map(lambda a, b: a - b, theta, theta_init)


def add_task_vector(theta_init, delta, scale=1.0):
    """``theta_init + scale * delta`` leaf by leaf."""
    _check_same_structure([theta_init, delta])
    return jax.tree.map(lambda a, d: a + scale * d, theta_init, delta)


def liti(theta_init, theta_merged, eta):
    """LITI (WARP, Sec. 3.3): ``theta_init + eta * (theta_merged - theta_init)``, i.e.
    :func:`interpolate` from the initialisation; ``eta = 0`` is the init, 1 the merged model."""
    return interpolate(theta_init, theta_merged, eta)


DOT_THRESHOLD = 0.9995
"""``|cos| > DOT_THRESHOLD``: two tensors count as parallel and SLERP falls back to lerp."""


def slerp_tensor(t, v0, v1, dot_threshold: float = DOT_THRESHOLD, eps: float = 1e-8):
    """Spherical interpolation of two tensors as flat vectors (Shoemake 1985; WARP Eq. 3):
    ``sin((1 - t) Omega) / sin Omega * v0 + sin(t Omega) / sin Omega * v1`` with ``Omega`` the
    angle between them (the direction from the normalised copies, the magnitudes from the
    originals, as model-merging practice does); linear interpolation ``(1 - t) v0 + t v1``
    when ``|cos Omega| > dot_threshold``. ``t = 0`` gives ``v0``, ``t = 1`` gives ``v1``;
    equal-norm inputs keep their norm. Jittable (the branch is a ``jnp.where``)."""
    v0, v1 = jnp.asarray(v0), jnp.asarray(v1)
    if v0.shape != v1.shape:
        raise ValueError(f"slerp needs tensors of one shape, got {v0.shape} and {v1.shape}")
    dtype = jnp.result_type(v0, v1, jnp.float32)
    a, b = v0.astype(dtype), v1.astype(dtype)
    norm_a, norm_b = jnp.linalg.norm(a.ravel()), jnp.linalg.norm(b.ravel())
    unit_a = jnp.where(norm_a > eps, a / jnp.where(norm_a > eps, norm_a, 1.0), a)
    unit_b = jnp.where(norm_b > eps, b / jnp.where(norm_b > eps, norm_b, 1.0), b)
    dot = jnp.sum(unit_a * unit_b)
    parallel = jnp.abs(dot) > dot_threshold
    omega = jnp.arccos(jnp.clip(jnp.where(parallel, 0.0, dot), -1.0, 1.0))
    sin_omega = jnp.sin(omega)
    s0 = jnp.sin(omega - omega * t) / sin_omega
    s1 = jnp.sin(omega * t) / sin_omega
    spherical = s0 * a + s1 * b
    linear = (1.0 - t) * a + t * b
    return jnp.where(parallel, linear, spherical).astype(v0.dtype)


def slerp(t, tree0, tree1, dot_threshold: float = DOT_THRESHOLD):
    """:func:`slerp_tensor` leaf by leaf (per parameter tensor, WARP Sec. 3.2)."""
    _check_same_structure([tree0, tree1])
    return jax.tree.map(lambda a, b: slerp_tensor(t, a, b, dot_threshold), tree0, tree1)


def slerp_merge(theta_init, thetas: Sequence, t=None):
    """WARP's merge of ``M`` fine-tuned models: SLERP of their task vectors ``theta_m - theta_init``
    per tensor, added back to ``theta_init``. ``M = 2``: ``slerp(t, delta_1, delta_2)`` (``t = 0.5``
    by default, the paper's lambda). ``M > 2`` (our choice; the paper's recursion is not
    reproduced here): folded left, the ``m``-th vector entering with weight ``1 / m``, which
    is the uniform average for parallel vectors."""
    thetas = list(thetas)
    _check_same_structure([theta_init, *thetas])
    if len(thetas) < 2:
        raise ValueError(f"thetas must hold at least two models, got {len(thetas)}")
    deltas = [task_vector(theta, theta_init) for theta in thetas]
    if len(deltas) == 2:
        merged = slerp(0.5 if t is None else t, deltas[0], deltas[1])
    else:
        if t is not None:
            raise ValueError("t applies to M = 2 models only")
        merged = deltas[0]
        for m, delta in enumerate(deltas[1:], start=2):
            merged = slerp(1.0 / m, merged, delta)
    return add_task_vector(theta_init, merged)
