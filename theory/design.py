"""G-optimal (equivalently D-optimal) experimental design on a finite feature set.

For features ``x_1..x_n`` spanning R^r and a design ``pi`` (a probability vector over them),
``V(pi) = sum_i pi_i x_i x_i^T`` and the leverage of ``x`` is ``w(x) = x^T V(pi)^{-1} x``.
Kiefer-Wolfowitz (Lattimore & Szepesvari 2020, Thm 21.1): ``pi`` minimises
``g(pi) = max_i w(x_i)`` iff it maximises ``log det V(pi)`` iff ``g(pi) = r``; some optimum has
at most ``r (r + 1) / 2`` support points. ``sum_i pi_i w(x_i) = r`` for every ``pi``.
The weighted version used by VWLS-MDVI (Kitamura et al. 2023, "weighted KW") is the same
problem on ``sqrt(f_i) x_i``.

Algorithm (Lattimore & Szepesvari 2020, Note 21.3; Todd & Yildirim 2007): greedy volume
initialisation (``r`` points chosen by largest residual norm, i.e. pivoted Gram-Schmidt, uniform
weights), then Frank-Wolfe / Fedorov-Wynn steps with exact line search in the unified
toward/away form of Todd & Yildirim,

    t = (w_j - r) / ((r - 1) w_j), clipped at t >= -pi_j;   pi <- (pi + t e_j) / (1 + t),

stepping toward the largest leverage, or away from the smallest-leverage support point when
``r - w_min > w_max - r`` (Wolfe-Atwood rule); the clip is a drop step. ``V^{-1}`` and all
leverages follow by Sherman-Morrison in O(n r) per step, with ``u = V^{-1} x_j``:

    V^{-1} <- (1 + t) [V^{-1} - t u u^T / (1 + t w_j)],
    w_i    <- (1 + t) [w_i - t (x_i^T u)^2 / (1 + t w_j)],

and an exact Cholesky refresh every ``refresh_every`` steps. Support pruning: the
Harman-Pronzato (2007) rule certifies that ``x`` is in no D-optimal support when
``w(x) < r [1 + e/2 - sqrt(e (4 + e - 4/r)) / 2]`` with ``e = g - r``; certified points are never
stepped toward, and a certified support point is dropped (``t = -pi_j``) at once. It stops when
``g <= (1 + tolerance) r``; then ``log det V* - log det V(pi) <= r log(g / r)``, the duality-gap
certificate [derived: ``log det(V^{-1} V*) <= r log(tr(V^{-1} V*) / r)`` by AM-GM on the
eigenvalues, and ``tr(V^{-1} V*) = sum_i pi*_i w_i <= g``].

Rank-deficient features are projected onto their column space (SVD, relative tolerance) and the
design is computed in R^r with ``r`` the rank; a ridge is never added. The columns are first
equilibrated (each scaled by a power of two, exactly, to a largest entry near 1), so the relative
rank test does not depend on the units of the features: a column scaling is a map
``phi -> B phi`` with diagonal ``B``, which must not change the design. The whole iteration works
on orthonormal coordinates of the column space, so its result depends only on that space: it is
invariant under ``phi -> B phi`` for invertible ``B``.

Two entry points share one implementation: :func:`optimal_design` (host, validated input, a
frozen :class:`Design` result with a Caratheodory support reduction to at most ``r (r + 1) / 2``
points and a float64 certificate) and :func:`design_weights` (pure JAX, jittable and vmappable,
for use inside jitted algorithms such as VWLS-MDVI; full-column-rank input; every step O(n r)).

At scale (``n`` in the 10^5-10^6 range) :func:`optimal_design` runs the same jitted iteration on a
working set of a few thousand rows, between jitted segments passes once over the remaining
rows for their leverages, removes (compacts away) the rows the Harman-Pronzato rule certifies
out of every optimal support, and refills the working set with the rows of largest leverage
until the whole set is certified (a column-generation scheme; Harman & Pronzato 2007 make the
removals safe). Steps then cost O(working set r) and passes O(n_active r^2); the stored
coordinates may be float32 (the certificate stays float64).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
from jax.scipy.linalg import solve_triangular

Array = jax.Array

DEFAULT_TOLERANCE = 1e-3
DEFAULT_MAX_ITERATIONS = 20_000
DEFAULT_REFRESH_EVERY = 200
RANK_TOLERANCE = 1e-10
# A certified point is dropped only if the drop keeps V safely non-singular (pi_j w_j < 1).
_DROP_MARGIN = 1e-6


# ---------------------------------------------------------------------------------------------
# The iteration (pure JAX)
# ---------------------------------------------------------------------------------------------


class DesignState(NamedTuple):
    """Output of :func:`design_weights` (all arrays; batched under ``vmap``)."""

    weights: Array  # [n] the design pi (exact zeros off the support)
    leverage: Array  # [n] w_i = x_i^T V(pi)^{-1} x_i, from the last Cholesky refresh
    g_over_d: Array  # max_i w_i / r
    iterations: Array  # toward / away / drop steps taken
    certified: Array  # [n] Harman-Pronzato: certainly outside every optimal support


class _Loop(NamedTuple):
    weights: Array
    v_inv: Array
    leverage: Array
    g: Array
    certified: Array
    iterations: Array


def _greedy_initial_weights(q: Array) -> Array:
    """Uniform weights on ``r`` points picked by largest residual norm (pivoted Gram-Schmidt).

    The picked points span R^r, so ``V`` is non-singular from the start; on one-hot features
    this is already the optimal (uniform) design. ``q``: ``[n, r]`` with orthonormal columns.
    """
    n, r = q.shape
    residual = jnp.sum(q * q, axis=1)

    def pick(k, carry):
        residual, basis, chosen = carry
        i = jnp.argmax(jnp.where(chosen, -jnp.inf, residual))
        v = q[i]
        for _ in range(2):  # Gram-Schmidt twice: orthogonal to rounding
            v = v - basis.T @ (basis @ v)
        b = v / jnp.linalg.norm(v)
        basis = basis.at[k].set(b)
        residual = residual - (q @ b) ** 2
        return residual, basis, chosen.at[i].set(True)

    init = (residual, jnp.zeros((r, r), q.dtype), jnp.zeros(n, bool))
    _, _, chosen = jax.lax.fori_loop(0, r, pick, init)
    return chosen.astype(q.dtype) / r


def _refresh(q: Array, weights: Array) -> tuple[Array, Array]:
    """Exact ``V^{-1}`` and leverages from a Cholesky factorisation of ``V(pi)``."""
    r = q.shape[1]
    information = (q * weights[:, None]).T @ q
    chol = jnp.linalg.cholesky(information)
    chol_inv = solve_triangular(chol, jnp.eye(r, dtype=q.dtype), lower=True)
    whitened = q @ chol_inv.T
    return chol_inv.T @ chol_inv, jnp.sum(whitened * whitened, axis=1)


def _harman_pronzato_threshold(g: Array, r: int) -> Array:
    """Leverage below which a point is in no D-optimal support (Harman & Pronzato 2007)."""
    e = jnp.maximum(g - r, 0.0)
    return r * (1.0 + e / 2.0 - jnp.sqrt(e * (4.0 + e - 4.0 / r)) / 2.0)


def _step(q: Array, r: int, drop_margin: float, s: _Loop) -> _Loop:
    """One toward / away / drop step with exact line search and Sherman-Morrison updates.

    ``V^{-1}`` and the leverages are kept in the dtype of ``q`` (the step precision), the
    weights in their own (float64 on the host path)."""
    weights, v_inv, leverage = s.weights, s.v_inv, s.leverage
    in_support = weights > 0
    toward = jnp.argmax(jnp.where(s.certified, -jnp.inf, leverage))
    away = jnp.argmin(jnp.where(in_support, leverage, jnp.inf))
    droppable = in_support & s.certified & (weights * leverage < 1.0 - drop_margin)
    drop = jnp.any(droppable)
    use_away = (r - leverage[away]) > (leverage[toward] - r)
    j = jnp.where(drop, jnp.argmax(droppable), jnp.where(use_away, away, toward))
    w_j = leverage[j]
    t = (w_j - r) / ((r - 1) * w_j)
    t = jnp.where(drop, -weights[j], jnp.maximum(t, -weights[j]))
    t_step = t.astype(leverage.dtype)
    u = v_inv @ q[j]
    denom = 1.0 + t_step * w_j
    projections = q @ u
    new_leverage = (1.0 + t_step) * (leverage - t_step * projections**2 / denom)
    new_v_inv = (1.0 + t_step) * (v_inv - t_step * jnp.outer(u, u) / denom)
    new_weights = (weights + t * jax.nn.one_hot(j, weights.shape[0], dtype=weights.dtype)) / (1.0 + t)
    clipped = t <= -weights[j]
    new_weights = new_weights.at[j].set(jnp.where(clipped, 0.0, new_weights[j]))
    return _Loop(
        weights=new_weights,
        v_inv=new_v_inv,
        leverage=new_leverage,
        g=jnp.max(new_leverage).astype(s.g.dtype),
        certified=s.certified,
        iterations=s.iterations + 1,
    )


def _iterate(q: Array, tolerance, max_iterations: int, refresh_every: int, initial_weights=None, step_dtype=None) -> DesignState:
    """The toward / away / drop iteration from ``initial_weights`` (a design whose support spans
    R^r; ``None``: the greedy volume initialisation). With ``step_dtype`` (e.g. float32 for float64
    ``q``) the steps run in that precision between refreshes in the precision of ``q``; the stopping
    ``g`` and the Harman-Pronzato certification come from the refreshes only when it is coarser
    (a step that sees ``g <= target`` in the step precision ends the segment; the refresh decides)."""
    n, r = q.shape
    q_step = q if step_dtype is None else q.astype(step_dtype)
    drop_margin = _DROP_MARGIN
    if q_step.dtype != q.dtype:  # keep 1 - pi_j w_j clear of the step precision's rounding
        drop_margin = max(_DROP_MARGIN, 1e4 * float(jnp.finfo(q_step.dtype).eps))
    if r == 1:
        # r = 1 is degenerate for the Todd step: all mass on a point of largest |x|.
        leverage_all = q[:, 0] ** 2
        weights = jax.nn.one_hot(jnp.argmax(leverage_all), n, dtype=q.dtype)
        leverage = leverage_all / jnp.max(leverage_all)
        return DesignState(weights, leverage, jnp.max(leverage), jnp.array(0), leverage < 1.0)
    target = (1.0 + tolerance) * r

    def refreshed(weights, certified, iterations):
        v_inv, leverage = _refresh(q, weights)
        g = jnp.max(leverage)
        certified = certified | (leverage < _harman_pronzato_threshold(g, r))
        return _Loop(weights, v_inv.astype(q_step.dtype), leverage.astype(q_step.dtype), g, certified, iterations)

    def outer_cond(s):
        return (s.g > target) & (s.iterations < max_iterations)

    def outer_body(s):
        stop = s.iterations + refresh_every

        def inner_cond(s):
            return (s.g > target) & (s.iterations < jnp.minimum(stop, max_iterations))

        s = jax.lax.while_loop(inner_cond, functools.partial(_step, q_step, r, drop_margin), s)
        return refreshed(s.weights, s.certified, s.iterations)

    weights0 = _greedy_initial_weights(q) if initial_weights is None else initial_weights
    s = refreshed(weights0, jnp.zeros(n, bool), jnp.array(0))
    s = jax.lax.while_loop(outer_cond, outer_body, s)
    return DesignState(s.weights, s.leverage, s.g / r, s.iterations, s.certified)


def design_weights(
    features: Array,
    tolerance=DEFAULT_TOLERANCE,
    max_iterations=DEFAULT_MAX_ITERATIONS,
    refresh_every=DEFAULT_REFRESH_EVERY,
    orthonormalize: bool = True,
) -> DesignState:
    """G-optimal design of the rows of ``features`` ``[n, r]`` (pure JAX; jit/vmap friendly).

    ``features`` must have full column rank ``r`` (project first, e.g. with
    :func:`column_space`); for a weighted design pass ``sqrt(f)[:, None] * features``. The rows
    are orthonormalised by a QR factorisation (skip it with ``orthonormalize=False`` when the
    columns are already orthonormal), so the result is invariant under ``features -> features @
    B`` for invertible ``B``. Stops at ``g <= (1 + tolerance) r`` or after ``max_iterations``
    steps (check ``g_over_d``).
    """
    features = jnp.asarray(features)
    if features.ndim != 2:
        raise ValueError(f"features must have shape [n, r], got {features.shape}")
    q = jnp.linalg.qr(features)[0] if orthonormalize else features
    return _iterate(q, tolerance, max_iterations, refresh_every)


_design_weights_jit = jax.jit(design_weights, static_argnames="orthonormalize")


# ---------------------------------------------------------------------------------------------
# Host interface: validation, rank handling, support reduction, the frozen result
# ---------------------------------------------------------------------------------------------


def column_space(features, rank_tolerance: float = RANK_TOLERANCE) -> tuple[np.ndarray, np.ndarray]:
    """Orthonormal coordinates of the column space of ``features`` ``[n, d]``.

    Returns ``(coordinates [n, r], basis [d, r])``. The columns are equilibrated first:
    ``features D`` with ``D = diag(2^-k_j)`` and ``k_j`` the rounded ``log2`` of column ``j``'s
    largest absolute entry (a power of two, so the scaling is exact; columns already near unit
    scale are left as they are). With the thin SVD ``features D = U S V^T``, keeping the
    singular values above ``rank_tolerance * s_max``, ``coordinates = U_r`` and
    ``basis = D V_r``, so ``features @ basis = U_r S_r`` has full column rank ``r``. Leverages
    (and hence designs) computed on ``coordinates`` equal those of ``features`` in its column
    space, whatever the units of its columns.
    """
    x = np.asarray(features, dtype=np.float64)
    exponents = _column_exponents(x)
    u, s, vt = np.linalg.svd(np.ldexp(x, -exponents), full_matrices=False)
    if s.size == 0 or s[0] == 0.0:
        raise ValueError("features are all zero: no design exists")
    rank = int(np.sum(s > rank_tolerance * s[0]))
    return u[:, :rank], np.ldexp(vt[:rank].T, -exponents[:, None])


def _column_exponents(x: np.ndarray) -> np.ndarray:
    """``k_j = round(log2 max_i |x_ij|)`` (0 for an all-zero column), clipped to +-1000 so that
    ``2^-k_j`` stays a normal float64."""
    return _exponents_of_maxima(np.max(np.abs(x), axis=0, initial=0.0))


def _exponents_of_maxima(largest: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        exponents = np.where(largest > 0, np.round(np.log2(largest)), 0.0)
    return np.clip(exponents, -1000, 1000).astype(np.int64)


def allocation_counts(weights, total):
    """``n_i = ceil(pi_i N)`` samples at each support point (at least 1 there), 0 elsewhere.

    The Lattimore-Szepesvari allocation (eq. 21.3): the sum lies in ``[N, N + |support|)``.
    NumPy in, NumPy out (int64); JAX arrays (possibly traced) give JAX integers. A relative
    ``1e-12`` guards against rounding: ``ceil((1/9) * 9)`` is 1, not 2.
    """
    xp = np if isinstance(weights, np.ndarray) else jnp
    weights = xp.asarray(weights)
    raw = xp.ceil(weights * total * (1.0 - 1e-12))
    counts = xp.where(weights > 0, xp.maximum(raw, 1.0), 0.0)
    if xp is np:
        return counts.astype(np.int64)
    return counts.astype(jnp.int64 if jax.config.jax_enable_x64 else jnp.int32)


def _validate(features, weights) -> tuple[np.ndarray, np.ndarray | None]:
    """Checked ``(features [n, d], sqrt(f) [n] or None)``; float32 features are kept as they are
    (no float64 copy of a large set), anything else becomes float64."""
    x = np.asarray(features)
    if x.dtype != np.float32:
        x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must have shape [n, d], got shape {x.shape}")
    n, d = x.shape
    if n == 0 or d == 0:
        raise ValueError(f"features must have at least one row and one column, got {x.shape}")
    for rows in _chunks(n):
        finite = np.isfinite(x[rows])
        if not finite.all():
            bad = np.argwhere(~finite)[0]
            raise ValueError(f"features contain NaN or inf, first at {(int(bad[0]) + rows.start, int(bad[1]))}")
    if weights is None:
        return x, None
    f = np.asarray(weights, dtype=np.float64)
    if f.shape != (n,):
        raise ValueError(f"weights must have shape [n] = {(n,)}, got {f.shape}")
    if not np.all(np.isfinite(f)) or np.any(f <= 0):
        raise ValueError("weights must be finite and > 0 (a design on sqrt(f) * phi)")
    return x, np.sqrt(f)


def _chunks(n: int, size: int = 1 << 16):
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]


def _rows(x: np.ndarray, scale: np.ndarray | None, rows, dtype=np.float64) -> np.ndarray:
    """Rows of ``sqrt(f) * phi`` in ``dtype`` (``rows``: a slice or an index array)."""
    block = np.asarray(x[rows], dtype=dtype)
    return block if scale is None else scale[rows, None].astype(dtype) * block


def _leverages(coordinates: np.ndarray, weights: np.ndarray) -> np.ndarray:
    information = (coordinates * weights[:, None]).T @ coordinates
    chol = np.linalg.cholesky(information)
    whitened = np.linalg.solve(chol, coordinates.T)
    return np.sum(whitened * whitened, axis=0)


def _caratheodory(coordinates: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Reduce the support to at most ``r (r + 1) / 2`` points without raising ``g``.

    Moves along a null direction ``delta`` of ``pi -> sum_i pi_i x_i x_i^T`` restricted to the
    support (so the unnormalised information matrix is unchanged), with the sign chosen so that
    ``sum delta <= 0``, until a weight hits zero; renormalising then multiplies every leverage
    by ``sum pi <= 1``, so ``g`` does not increase and ``log det`` does not decrease.
    """
    r = coordinates.shape[1]
    limit = r * (r + 1) // 2
    rows, cols = np.triu_indices(r)
    weights = weights.copy()
    while True:
        support = np.flatnonzero(weights > 0)
        if support.size <= limit:
            return weights / weights.sum()
        x = coordinates[support]
        moments = (x[:, rows] * x[:, cols]).T  # [limit, s]
        _, _, vt = np.linalg.svd(moments)
        delta = vt[-1]  # s > limit: a null direction exists
        if delta.sum() > 0:
            delta = -delta
        ratios = np.full(support.size, np.inf)
        negative = delta < 0
        ratios[negative] = weights[support][negative] / -delta[negative]
        hit = int(np.argmin(ratios))
        new = weights[support] + ratios[hit] * delta
        new[hit] = 0.0
        weights[support] = np.maximum(new, 0.0)


# ---------------------------------------------------------------------------------------------
# Design at scale: a working set, Harman-Pronzato compaction between jitted segments
# ---------------------------------------------------------------------------------------------

DEFAULT_WORKING_SET = 2048
PRECISIONS = ("float64", "float32")
# Relative accuracy trusted of leverages computed in the working precision: a point is certified
# out only below the Harman-Pronzato threshold of the inflated g, minus this margin times r.
_PRECISION_MARGIN = {"float64": 1e-9, "float32": 1e-4}
_MAX_ROUNDS = 100
# Gram eigenvalue ratio above which S and V are taken from the Gram matrix (Gram rounding errors
# are ~1e-16 of its largest eigenvalue, far below this)
_GRAM_CONDITION = 1e-8
# first working-set tolerance: its pass certifies most rows out (the Harman-Pronzato threshold at
# g = 1.01 r is about r / 2 for r = 50), so the later, tighter rounds pass over fewer rows
_FIRST_TOLERANCE = 1e-2
# compact (copy the active rows) once this fraction of them is certified out
_COMPACT_FRACTION = 0.1


def _solve_subset(
    q: Array, weights: Array, tolerance, max_iterations, refresh_every, greedy: bool, step_dtype: str | None
) -> DesignState:
    """The iteration on a working set ``q [m, r]`` (zero rows are padding: leverage 0, never
    stepped toward), from ``weights`` or, with ``greedy``, the greedy volume initialisation;
    steps in ``step_dtype`` (``None``: that of ``q``), float64 refreshes."""
    return _iterate(q, tolerance, max_iterations, refresh_every, None if greedy else weights, step_dtype)


_solve_subset_jit = jax.jit(_solve_subset, static_argnames=("greedy", "step_dtype"))


def _column_map(x: np.ndarray, scale: np.ndarray | None, rank_tolerance: float) -> np.ndarray:
    """``T [d, r]`` such that ``(sqrt(f) phi) @ T`` has orthonormal columns spanning the column
    space: the :func:`column_space` projection (same equilibration, same rank rule) without
    an ``[n, d]`` float64 copy. The singular values and right singular vectors come from the
    ``R`` factor of a chunked (TSQR) Householder QR, ``X D = Q R``, ``R = U S V^T``, so
    ``T = D V_r S_r^{-1}`` and ``X T = Q U_r``. When the Gram matrix ``D X^T X D`` is well
    conditioned (eigenvalue ratio above ``1e-8``, so ``s_min / s_max > 1e-4``) its eigenpairs
    give ``S`` and ``V`` directly (one matrix product a chunk, no QR)."""
    n, d = x.shape
    largest = np.zeros(d)
    for rows in _chunks(n):
        largest = np.maximum(largest, np.max(np.abs(_rows(x, scale, rows, x.dtype)), axis=0))
    exponents = _exponents_of_maxima(largest)
    gram = np.zeros((d, d))
    for rows in _chunks(n):
        y = np.ldexp(_rows(x, scale, rows), -exponents)
        gram += y.T @ y
    eigenvalues, eigenvectors = np.linalg.eigh(gram)
    if eigenvalues[0] > _GRAM_CONDITION * eigenvalues[-1]:
        # well conditioned: the Gram eigenpairs are the squared singular values and the right
        # singular vectors to working accuracy, and every singular value passes the rank test
        s = np.sqrt(eigenvalues[::-1])
        return np.ldexp(eigenvectors[:, ::-1], -exponents[:, None]) / s
    r_factor = np.zeros((0, d))
    for rows in _chunks(n):
        stacked = np.vstack([r_factor, np.ldexp(_rows(x, scale, rows), -exponents)])
        r_factor = np.linalg.qr(stacked, mode="r")
    _, s, vt = np.linalg.svd(r_factor)
    if s.size == 0 or s[0] == 0.0:
        raise ValueError("features are all zero: no design exists")
    rank = int(np.sum(s > rank_tolerance * s[0]))
    return np.ldexp(vt[:rank].T, -exponents[:, None]) / s[:rank]


def _map_rows(x, scale, transform: np.ndarray, dtype, rows=None) -> np.ndarray:
    """``(sqrt(f) phi) @ T`` in ``dtype``, chunk by chunk (``rows``: an index array to map only
    those rows). The product is float32 only when the features are float32 and ``T`` is well
    inside float32's range (the coordinates are O(1) either way); otherwise float64, then cast."""
    if rows is not None:
        return (_rows(x, scale, rows) @ transform).astype(dtype)
    compute = np.float64
    if np.dtype(dtype) == np.float32 and x.dtype == np.float32:
        magnitudes = np.abs(transform[transform != 0])
        if magnitudes.size and magnitudes.min() > 1e-30 and magnitudes.max() < 1e30:
            compute = np.float32
    transform = transform.astype(compute)
    out = np.empty((x.shape[0], transform.shape[1]), dtype)
    for chunk in _chunks(x.shape[0]):
        out[chunk] = _rows(x, scale, chunk, compute) @ transform
    return out


def _inverse_cholesky(coordinates: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``L^{-1}`` with ``L L^T = sum_i pi_i x_i x_i^T`` (float64): leverages are ``|L^{-1} x|^2``."""
    information = (coordinates * weights[:, None]).T @ coordinates
    chol = np.linalg.cholesky(information)
    return scipy.linalg.solve_triangular(chol, np.eye(chol.shape[0]), lower=True)


def _leverage_pass(q: np.ndarray, whitening: np.ndarray) -> np.ndarray:
    """``|W q_i|^2`` for every row, in the dtype of ``q``, chunk by chunk (O(n r^2), O(chunk r) memory)."""
    w_t = whitening.T.astype(q.dtype)
    out = np.empty(q.shape[0], q.dtype)
    for rows in _chunks(q.shape[0]):
        z = q[rows] @ w_t
        out[rows] = np.einsum("ij,ij->i", z, z)
    return out


def _exact_leverages(x, scale, transform, support, support_weights) -> np.ndarray:
    """Float64 leverages of every row of the original features under the design (the certificate)."""
    whitening = _inverse_cholesky(_map_rows(x, scale, transform, np.float64, support), support_weights)
    out = np.empty(x.shape[0])
    for rows in _chunks(x.shape[0]):
        z = _rows(x, scale, rows) @ (transform @ whitening.T)
        out[rows] = np.einsum("ij,ij->i", z, z)
    return out


def _compact_rows(q: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """``q[kept]`` moved to the front of ``q`` in place, chunk by chunk (no second ``[n, r]``
    copy): the source rows ``idx[j] >= j`` of a chunk lie at or after every row already written."""
    idx = np.flatnonzero(kept)
    for rows in _chunks(idx.size):
        q[rows] = q[idx[rows]]
    return q[: idx.size]


class _Compacted(NamedTuple):
    support: np.ndarray  # global indices, ascending
    support_weights: np.ndarray
    certified: np.ndarray  # [n] bool
    iterations: int
    transform: np.ndarray
    leverage: np.ndarray  # [n] float64, exact under (support, support_weights)


def _design_compacted(x, scale, tolerance, max_iterations, refresh_every, rank_tolerance, precision, working_set):
    """Working-set design with Harman-Pronzato compaction (see :func:`optimal_design`).

    Rounds: (1) the jitted iteration on a working set of ``m`` rows (the current support and
    the active rows of largest leverage), warm-started from the current design, to a working
    tolerance that starts at ``1e-2`` and shrinks tenfold (down to ``tolerance``) whenever the
    whole set's ``g`` is within twice of it; (2) one pass
    over the active rows for their leverages in the working precision; (3) with ``g`` their
    maximum (inflated by the precision margin), rows below the Harman-Pronzato threshold are
    certified out of every optimal support of the whole set and removed from the active set
    (a compacted copy: later passes and working sets cost O(n_active r)); (4) once ``g <= (1 +
    tolerance) r`` the float64 certificate over all ``n`` original rows decides; if it fails the
    working-set tolerance is tightened and the rounds go on. Returns ``None`` when the first
    working set does not span the column space (the caller then designs the whole set at once).
    """
    transform = _column_map(x, scale, rank_tolerance)
    rank = transform.shape[1]
    dtype = np.dtype(precision)
    margin = _PRECISION_MARGIN[precision]
    target = (1.0 + tolerance) * rank
    n = x.shape[0]
    m = min(working_set, n)
    q_active = _map_rows(x, scale, transform, dtype)  # the only [n, r] copy
    active = np.arange(n)
    excluded = np.zeros(n, bool)  # certified but not yet compacted away (aligned with active)
    certified = np.zeros(n, bool)
    # leverage under the uniform design is n |q_i|^2 (orthonormal coordinates): the first ranking
    score = np.einsum("ij,ij->i", q_active, q_active)
    support = np.zeros(0, np.int64)
    support_weights = np.zeros(0)
    inner_tolerance = max(tolerance, _FIRST_TOLERANCE)
    iterations = 0
    exact = None
    with jax.enable_x64(True):
        for _ in range(_MAX_ROUNDS):
            while support.size > m // 2 and m < n:  # room for as many new rows as support rows
                m = min(2 * m, n)
            local = np.searchsorted(active, support)
            ranked = np.where(excluded, -np.inf, score)
            ranked[local] = -np.inf
            take = min(m - local.size, active.size - local.size)
            picks = np.argpartition(-ranked, take - 1)[:take] if take > 0 else np.zeros(0, np.int64)
            chosen = np.concatenate([local, picks])
            q_set = np.zeros((m, rank))
            q_set[: chosen.size] = _map_rows(x, scale, transform, np.float64, active[chosen])
            w_set = np.zeros(m)
            w_set[: local.size] = support_weights
            state = _solve_subset_jit(
                jnp.asarray(q_set),
                jnp.asarray(w_set),
                jnp.asarray(inner_tolerance, jnp.float64),
                jnp.asarray(max_iterations - iterations),
                jnp.asarray(refresh_every),
                greedy=support.size == 0,
                step_dtype="float32" if precision == "float32" else None,
            )
            if not np.isfinite(float(state.g_over_d)):
                return None
            exact = None
            iterations += int(state.iterations)
            pi = np.asarray(state.weights, np.float64)[: chosen.size]
            keep = np.flatnonzero(pi > 0)
            order = np.argsort(active[chosen[keep]])
            support = active[chosen[keep]][order]
            support_weights = pi[keep][order] / pi[keep].sum()
            if iterations >= max_iterations:
                break
            leverage = _leverage_pass(q_active, _inverse_cholesky(q_set[keep][order], support_weights))
            g = float(leverage.max())
            if g <= target:
                exact = _exact_leverages(x, scale, transform, support, support_weights)
                if exact.max() <= target:
                    break
                inner_tolerance /= 4.0  # float32 rounding or a certified row above target
                score = exact[active]
                continue
            if g <= (1.0 + 2.0 * inner_tolerance) * rank:  # the working set stands for the whole set
                inner_tolerance = max(tolerance, inner_tolerance / 10.0)
            threshold = _harman_pronzato_threshold(g * (1.0 + margin), rank) - margin * rank
            excluded |= leverage < float(threshold)
            excluded[np.searchsorted(active, support)] = False
            certified[active[excluded]] = True
            if excluded.sum() >= _COMPACT_FRACTION * active.size:  # worth a copy
                kept = ~excluded
                active, q_active, leverage = active[kept], _compact_rows(q_active, kept), leverage[kept]
                excluded = np.zeros(active.size, bool)
            score = leverage
    if exact is None:
        exact = _exact_leverages(x, scale, transform, support, support_weights)
    return _Compacted(support, support_weights, certified, iterations, transform, exact)


# ---------------------------------------------------------------------------------------------
# The public host entry point
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Design:
    """A G-optimal design and its certificate (from :func:`optimal_design`).

    Attributes:
      weights: ``[n]`` design ``pi`` over the input rows, exact zeros off the support.
      support: indices of the rows with positive weight (ascending).
      g_over_d: ``max_i w_i / r``, recomputed exactly (float64, every row) at the end (1 at the
        optimum).
      gap_bound: ``r log(g / r)``, an upper bound on ``log det V* - log det V(pi)``.
      iterations: toward / away / drop steps taken.
      rank: ``r``, the rank of the (weighted) features; ``d`` below is their dimension.
      dim: ``d``.
      converged: ``g <= (1 + tolerance) r``.
      leverage: ``[n]`` leverages ``w_i`` (in the column space).
      certified: ``[n]`` rows certified out of every D-optimal support by the Harman-Pronzato
        rule during the run (``None`` where not recorded).
    """

    weights: np.ndarray
    support: np.ndarray
    g_over_d: float
    gap_bound: float
    iterations: int
    rank: int
    dim: int
    converged: bool
    leverage: np.ndarray
    certified: np.ndarray | None = None

    @property
    def g(self) -> float:
        return self.g_over_d * self.rank

    def counts(self, total: int) -> np.ndarray:
        """Samples per row for a budget of ``total``: see :func:`allocation_counts`."""
        if total < 1:
            raise ValueError(f"total must be >= 1, got {total}")
        return allocation_counts(self.weights, total)


def optimal_design(
    features,
    weights=None,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    max_iterations: int = DEFAULT_MAX_ITERATIONS,
    refresh_every: int = DEFAULT_REFRESH_EVERY,
    rank_tolerance: float = RANK_TOLERANCE,
    compaction: bool | None = None,
    working_set: int = DEFAULT_WORKING_SET,
    precision: str = "float64",
) -> Design:
    """G-optimal design on the rows of ``features`` ``[n, d]``, optionally weighted.

    Two ways to the same certificate (``g <= (1 + tolerance) r``, checked in float64 on every
    row of the original features):

    * uncompacted (small sets): the jitted iteration on all ``n`` rows at once, O(n r) a step;
    * compacted (large sets, :func:`_design_compacted`): the iteration runs on a working set
      of ``working_set`` rows (the support and the rows of largest leverage); between jitted
      segments one O(n_active r^2) pass computes every active leverage, rows certified out of
      every optimal support by the Harman-Pronzato rule are removed for good, and the working
      set is refilled with the rows of largest leverage, until the whole set is certified. A
      step costs O(working_set r); memory is one ``[n, r]`` copy in ``precision`` (``float32``
      halves it: 200 MB for n = 10^6, r = 50) besides the caller's features, which are read
      in chunks. Certification out is safe: a certified row is in no D-optimal support of
      the whole set, so the optimum is unchanged (Harman & Pronzato 2007, Thm 1).

    Args:
      features: ``Phi[n, d]``, finite. Rank-deficient sets are designed in their column space
        (``rank`` in the result); all-zero features are rejected. float32 input stays float32.
      weights: optional ``f[n] > 0``: the design is then on ``sqrt(f) * phi`` (weighted
        Kiefer-Wolfowitz, Kitamura et al. 2023).
      tolerance: stop at ``g <= (1 + tolerance) r``.
      max_iterations: cap on toward / away / drop steps (``converged`` says whether it stopped
        on the tolerance).
      refresh_every: steps between exact Cholesky refreshes of ``V^{-1}`` and the leverages.
      rank_tolerance: relative singular-value threshold of the column-space projection.
      compaction: ``None`` (default) compacts when ``n > 4 * working_set``.
      working_set: rows the compacted iteration works on (padded with zero rows: one
        compilation per ``(working_set, r)``); doubled while the support exceeds half of it.
      precision: ``"float64"`` or ``"float32"``: the working precision of the compacted path,
        i.e. of the stored coordinates, the leverage passes and the Sherman-Morrison steps of
        the working-set iteration; its Cholesky refreshes (which set ``g``, the stopping test
        and the Harman-Pronzato certificates inside it) and the final certificate are float64
        either way, and the uncompacted path is float64 throughout.

    Raises:
      ValueError: wrong shapes, NaN or inf, non-positive weights, all-zero features, a
        tolerance that is not > 0, an unknown precision, a working set smaller than ``d + 1``.
    """
    if not (tolerance > 0 and math.isfinite(tolerance)):
        raise ValueError(f"tolerance must be finite and > 0, got {tolerance}")
    if max_iterations < 0 or refresh_every < 1:
        raise ValueError("max_iterations must be >= 0 and refresh_every >= 1")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    x, scale = _validate(features, weights)
    n, d = x.shape
    if working_set <= d:
        raise ValueError(f"working_set must exceed the dimension d = {d}, got {working_set}")
    if compaction is None:
        compaction = n > 4 * working_set
    result = None
    if compaction and d > 1:
        result = _design_compacted(x, scale, tolerance, max_iterations, refresh_every, rank_tolerance, precision, working_set)
    if result is not None and result.transform.shape[1] > 1:
        rank = result.transform.shape[1]
        coordinates = _map_rows(x, scale, result.transform, np.float64, result.support)
        reduced = _caratheodory(coordinates, result.support_weights)
        pi = np.zeros(n)
        pi[result.support] = reduced
        leverage = result.leverage
        if np.any(reduced == 0):
            keep = reduced > 0
            leverage = _exact_leverages(x, scale, result.transform, result.support[keep], reduced[keep])
        iterations, certified = result.iterations, result.certified
    else:
        x = x if scale is None else scale[:, None] * x
        coordinates, _ = column_space(x, rank_tolerance)
        rank = coordinates.shape[1]
        with jax.enable_x64(True):
            state = _design_weights_jit(
                jnp.asarray(coordinates),
                jnp.asarray(tolerance, jnp.float64),
                jnp.asarray(max_iterations),
                jnp.asarray(refresh_every),
                orthonormalize=False,  # the SVD coordinates are orthonormal already
            )
            pi = np.asarray(state.weights, dtype=np.float64)
            iterations = int(state.iterations)
            certified = np.asarray(state.certified)
        pi = np.where(pi > 0, pi, 0.0)
        pi = _caratheodory(coordinates, pi / pi.sum())
        leverage = _leverages(coordinates, pi)
    g = float(np.max(leverage))
    return Design(
        weights=pi,
        support=np.flatnonzero(pi > 0),
        g_over_d=g / rank,
        gap_bound=rank * math.log(max(g / rank, 1.0)),
        iterations=iterations,
        rank=rank,
        dim=d,
        converged=g <= (1.0 + tolerance) * rank * (1 + 1e-12),
        leverage=leverage,
        certified=certified,
    )
