"""The f-softargmax and its conjugate: the regularized greedy step for any f-divergence.

Roulet, Liu, Vieillard, Sander and Blondel (2025, arXiv 2501.18537) define, for an
f-divergence ``D_f(p || r) = sum_j r_j f(p_j / r_j)`` with a reference measure ``r``,

    f-softargmax(x; r) = argmax_{p in simplex} <p, x> - D_f(p || r),
    Omega*(x)          = max_{p in simplex}    <p, x> - D_f(p || r).

With a temperature ``t > 0`` the regularized greedy step of MDVI, ``argmax <p, q> - t D_f``, is
the f-softargmax of ``x = q / t`` and its value is ``t Omega*(q / t)``. The maximisation runs over
the support ``S = {j : r_j > 0}`` of the reference (``log_ref = -inf`` outside it).

Solution (KKT). With ``g = (f')^{-1}`` extended by ``g(s) = 0`` for ``s <= f'(0+)``,

    p_j = r_j g(x_j - tau),      tau the unique root of  phi(tau) = sum_{j in S} r_j g(x_j - tau) = 1.

``phi`` is non-increasing (``g`` is), continuous, and strictly decreasing wherever it is positive.
If ``f'(0+) > -inf`` (the alpha family with alpha > 1, chi-squared) ``g`` vanishes below it and
``p`` has exact zeros (sparse outputs); otherwise ``p > 0`` on all of ``S``.

A valid bracket. Let ``k = |S|``, ``m`` an index of the largest score over ``S`` and
``r_max = max_{j in S} r_j``. Then

    tau_lo = x_m - f'(1 / r_m)                        has phi(tau_lo) >= 1,
    tau_hi = x_m - f'(1 / (k r_max))                  has phi(tau_hi) <= 1.

Proof: at ``tau_lo`` the term ``m`` is ``r_m g(f'(1 / r_m)) = 1`` and every other term is ``>= 0``.
At ``tau_hi`` every ``j`` has ``x_j - tau_hi <= f'(1 / (k r_max))``, hence, ``g`` being
non-decreasing, ``r_j g(x_j - tau_hi) <= r_j / (k r_max) <= 1 / k``, and the ``k`` terms sum to at
most 1. ``tau_lo <= tau_hi`` because ``1 / (k r_max) <= 1 / r_m`` and ``f'`` increases. Every
argument ``x_j - tau`` with ``tau >= tau_lo`` stays below ``f'(1 / r_m) < f'(+inf)``, inside the
range of ``f'`` where ``g`` is finite. The width ``W = f'(1 / r_m) - f'(1 / (k r_max))`` does not
depend on the scores' spread, so logit spreads of ``1e4`` cost no extra iterations, and it costs
two reductions of ``log r`` and no transcendental function per entry. For the unit reference it is
``W = f'(1) - f'(1 / k)``: ``log k`` for KL, ``(1 - k^(1 - alpha)) / (alpha - 1)`` for the alpha
family (``2 (1 - k^-1/2) < 2`` at ``alpha = 1.5``), ``2 (1 - 1 / k)`` for chi-squared.

Iterations. Each bisection step halves the bracket, so ``n`` steps leave ``|tau - tau*| <= W 2^-n``.
For an accuracy ``eps`` on ``tau`` (in the units of ``x``) the solver runs

    n = ceil(log2(W / eps)),   eps = 1e-6 in float32, 1e-12 in float64,

with ``W`` the largest bracket width of the batch (computed, not assumed). Examples at the unit
reference with ``k = 32000`` actions: alpha = 1.5 needs ``n = 21`` (float32) and ``41`` (float64);
KL needs 24 and 44. In float32 the threshold cannot be resolved below ``|tau| 2^-24``; ``x`` is
shifted by its maximum over ``S`` first so that ``|tau|`` stays of the order of ``W``.
The final ``p`` is evaluated at the upper end of the bracket, where every term is finite and the
sum lies in ``[1 / k, 1]``, then normalised to sum to one.

Closed forms, used by default where they exist: KL is the softmax; the alpha family at
``alpha = 2`` (sparsemax at the unit reference) and ``alpha = 1.5`` (1.5-entmax at the unit
reference) is solved exactly by sorting (see :func:`sorted_alpha_solution`), for any reference.

Derivatives are implicit (never through the loop): on the active set ``A = {p > 0}`` let
``w_j = r_j g'(x_j - tau) = r_j / f''(p_j / r_j)``; differentiating ``sum p = 1`` gives

    d tau = (<w, dx> + <p, d log r>) / sum w,     dp = w (dx - d tau) + p d log r,

a symmetric Jacobian ``diag(w) - w w^T / sum w`` in ``x`` (softmax: ``w = p``; sparsemax: ``w`` is
the support indicator). The conjugate's derivatives follow from the envelope theorem:
``d Omega*_t = <p, dq> - D_f(p || r) dt - t sum_j r_j (f(u_j) - u_j f'(u_j)) d log r_j`` with
``u = p / r``.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero

if TYPE_CHECKING:  # the divergences import this module; no import cycle at run time
    from mdvi.f_divergences import FDivergence

Array = jax.Array

#: Accuracy of the threshold reached by the bisection, per floating-point type.
THRESHOLD_TOLERANCE = {np.dtype(np.float32): 1e-6, np.dtype(np.float64): 1e-12}
MAX_ITERATIONS = 256


def threshold_tolerance(dtype) -> float:
    """The bisection's target accuracy on ``tau`` for a float dtype (1e-6 float32, 1e-12 float64)."""
    dtype = np.dtype(dtype)
    if dtype not in THRESHOLD_TOLERANCE:
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    return THRESHOLD_TOLERANCE[dtype]


def bisection_iterations(width, dtype) -> Array:
    """``n = ceil(log2(width / eps))`` (at least 0): halvings that shrink ``width`` to ``eps``."""
    eps = threshold_tolerance(dtype)
    width = jnp.asarray(width)
    n = jnp.ceil(jnp.log2(width / eps))
    # width 0 (a single action) needs none; an infinite width is capped (halving stalls at the
    # float spacing long before 256 steps).
    n = jnp.where(jnp.isnan(n), 0.0, jnp.clip(n, 0.0, MAX_ITERATIONS))
    return n.astype(jnp.int32)


# ---------------------------------------------------------------------------------------------
# Elementary pieces
# ---------------------------------------------------------------------------------------------


def _support_penalty(log_r: Array) -> Array:
    """0 on the support, ``-inf`` outside it (``log r = -inf``), by arithmetic alone.

    Full-row passes avoid comparisons: XLA:CPU does not vectorize a reduction over a
    comparison or a select (on ``[1024, 32000]`` float32 a masked row maximum took about as
    long as writing the rows, the same maximum over ``x + penalty`` a quarter of that).
    """
    return log_r - jnp.maximum(log_r, jnp.finfo(log_r.dtype).min)


def _support_shift(x: Array, log_r: Array) -> tuple[Array, Array, Array]:
    """Support mask, ``x`` shifted so that its maximum over the support is 0 (``-inf`` outside).

    Scores off the support must not be ``+inf`` or NaN (they would not be masked).
    """
    support = log_r > -jnp.inf
    penalty = _support_penalty(log_r)
    x_max = jnp.max(x + penalty, axis=-1, keepdims=True)
    shifted = (x - x_max) + penalty
    return support, shifted, x_max


def inverse_derivative(div: FDivergence, s: Array) -> Array:
    """``g(s) = (f')^{-1}(s)`` extended to the real line: 0 at or below ``f'(0+)``, ``+inf`` at or above ``f'(+inf)``."""
    low, high = div.f_prime_zero, div.f_prime_sup
    inside = (s > low) & (s < high)
    safe = jnp.where(inside, s, div.f_prime_one)  # f'(1) lies inside the range
    u = div.f_prime_inverse(safe)
    return jnp.where(s >= high, jnp.inf, jnp.where(s <= low, 0.0, u))


def _masses(div: FDivergence, shifted: Array, tau: Array, r: Array) -> Array:
    """``r_j g(x_j - tau)`` (``r = 0`` and ``shifted = -inf`` off the support give 0)."""
    return r * div.inverse_derivative(shifted - tau)


def _count_above(v: Array, line: Array) -> Array:
    """Entries of each row above ``line``, ties counted as halves (so never fewer than ``v > line``).

    Arithmetic (``sign``) rather than a sum of comparisons: XLA:CPU vectorizes the former only.
    """
    return jnp.sum(0.5 + 0.5 * jnp.sign(v - line), axis=-1)


def _bracket(div: FDivergence, shifted_top: Array, log_r_top: Array, log_r_max: Array, log_k: Array):
    # f'(1 / r_m) and f'(1 / (k r_max)) from the logarithm of their argument: no overflow of 1 / r.
    tau_lo = shifted_top - div.f_prime_of_log(-log_r_top)
    tau_hi = jnp.maximum(shifted_top - div.f_prime_of_log(-log_r_max - log_k), tau_lo)
    return tau_lo, tau_hi


def _reference_extent(log_r: Array) -> tuple[Array, Array]:
    """``(log r_max, log k)`` over the support, each ``[..., 1]``."""
    # exp(penalty) is exactly 1 on the support and 0 off it; its row sum counts exactly below 2^24 entries
    log_k = jnp.log(jnp.sum(jnp.exp(_support_penalty(log_r)), axis=-1, keepdims=True))
    return jnp.max(log_r, axis=-1, keepdims=True), log_k


def _top_entry(shifted: Array, *others: Array) -> list[Array]:
    """The largest score (``m`` of the module docstring) and the other arrays at its index, each ``[..., 1]``."""
    top = jnp.argmax(shifted, axis=-1, keepdims=True)  # off-support scores are -inf
    return [jnp.take_along_axis(v, top, axis=-1) for v in (shifted, *others)]


def bisection_bracket(div: FDivergence, shifted: Array, log_r: Array) -> tuple[Array, Array]:
    """``(tau_lo, tau_hi)`` of the module docstring for shifted scores, each ``[..., 1]``.

    ``m`` is found by ``argmax`` and its score read back, not assumed to be 0: XLA may round the
    same shifted scores differently in two fusions, and the proof holds for the value it reads.
    """
    return _bracket(div, *_top_entry(shifted, log_r), *_reference_extent(log_r))


#: Candidate blocks: a row of ``n`` entries is cut into ``n / BLOCK`` strided blocks (block ``b``
#: holds entries ``b, b + n / BLOCK, b + 2 n / BLOCK, ...``) and, when that is exact, only the blocks
#: with the largest maxima are searched.
BLOCK = 32
CANDIDATE_BLOCKS = 128


def _blocked(size: int, blocks: int = CANDIDATE_BLOCKS) -> bool:
    return size % BLOCK == 0 and size // BLOCK > blocks


def _block_maxima(scores_of, *arrays: Array) -> Array:
    """``[..., n / BLOCK]``: the maximum of ``scores_of(*arrays)`` (elementwise) over each strided block.

    An elementwise maximum of ``BLOCK`` contiguous slices of the inputs: XLA:CPU vectorizes it
    (on ``[1024, 32000]`` float32 about 8 ms, against 43 ms for a maximum over the minor axis of
    ``[..., n / BLOCK, BLOCK]`` and 42 ms over the middle axis of ``[..., BLOCK, n / BLOCK]``).
    """
    width = arrays[0].shape[-1] // BLOCK
    parts = [scores_of(*(v[..., i * width : (i + 1) * width] for v in arrays)) for i in range(BLOCK)]
    while len(parts) > 1:
        parts = [jnp.maximum(a, b) for a, b in zip(parts[::2], parts[1::2])]
    return parts[0]


def _top_blocks(block_max: Array, count: int, *arrays: Array) -> list[Array]:
    """The entries of the ``count`` blocks with the largest maxima, ``[..., count * BLOCK]`` each.

    Block-major, in decreasing order of the maxima (``top_k`` sorts): entries
    ``[i * BLOCK, (i + 1) * BLOCK)`` of the result are the block with the ``i``-th largest maximum.
    """
    lead, size = arrays[0].shape[:-1], arrays[0].shape[-1]
    kept = jax.lax.top_k(block_max, count)[1]
    index = jnp.expand_dims(kept, -2)  # [..., 1, count]

    def gather(v):
        strided = v.reshape(lead + (BLOCK, size // BLOCK))
        blocks = jnp.take_along_axis(strided, index, axis=-1)  # [..., BLOCK, count]
        return jnp.swapaxes(blocks, -1, -2).reshape(lead + (count * BLOCK,))

    return [gather(v) for v in arrays]


def _block_candidates(scores: Array, *others: Array) -> list[Array]:
    """``[block maxima, candidate scores, candidate others...]``: the entries of the kept blocks.

    The first kept block holds the row's largest score (:func:`_top_blocks`).

    Every entry above a line ``l`` lies in a block whose maximum is above ``l``; if at most
    ``CANDIDATE_BLOCKS`` block maxima of a row are above it, those blocks are all kept. Costs one
    pass over the rows and a ``top_k`` over ``size / BLOCK`` maxima.
    """
    block_max = _block_maxima(lambda v: v, scores)
    return [block_max, *_top_blocks(block_max, CANDIDATE_BLOCKS, scores, *others)]


def _halvings(div: FDivergence, shifted: Array, r: Array, tau_lo: Array, tau_hi: Array, num_iterations):
    """``num_iterations`` halvings of ``[tau_lo, tau_hi]`` on ``phi(tau) = sum_j r_j g(x_j - tau) = 1``."""

    def halve(_, bracket):
        lo, hi = bracket
        mid = 0.5 * (lo + hi)
        total = jnp.sum(_masses(div, shifted, mid, r), axis=-1, keepdims=True)
        above = total >= 1.0  # phi(mid) >= 1: the root lies to the right of mid
        return jnp.where(above, mid, lo), jnp.where(above, hi, mid)

    return jax.lax.fori_loop(0, num_iterations, halve, (tau_lo, tau_hi))


#: Scores kept by the bisection of a sparse divergence (the largest ones) when that is exact.
CANDIDATES = 128


def _bisect(div: FDivergence, shifted: Array, log_r: Array, num_iterations, candidates: int | None = CANDIDATES):
    """``(lo, hi, phi(hi))`` of the bisection's final bracket, each ``[..., 1]``, for shifted scores.

    Candidate pruning (sparse divergences, ``f'(0+) > -inf``): ``x_j - tau <= f'(0+)`` makes
    ``g(x_j - tau) = 0``, and every ``tau`` the bisection visits is ``>= tau_lo``, so a score with
    ``x_j <= tau_lo + f'(0+)`` never carries mass. If the ``candidates``-th largest score of every
    row passes that test, the halvings run on the ``candidates`` largest scores only and give the
    same bracket as on the full rows (the pruned terms are exact zeros); otherwise they run on the
    full rows. Rows of a multiple of ``BLOCK`` entries (and more than ``CANDIDATE_BLOCKS`` blocks)
    keep the blocks with the largest maxima instead (:func:`_block_candidates`): cheaper than a
    ``top_k`` over the rows. The tests count entries or blocks above the line (a reduction) rather
    than read ``top_k``'s output: with the latter, XLA on CPU turned ``top_k`` into a full sort.
    The bracket and the iteration count are those of the full problem either way. Every pass
    reads the one ``shifted`` array: recomputing ``x - x_max`` in several places let XLA contract
    it into an FMA with the producer of ``x`` in some fusions and not others (a score of 1e7 then
    moved by 0.4 between the bisection and the final pass).
    """
    size = shifted.shape[-1]
    prune = div.sparse and candidates is not None and candidates < size
    blocked = prune and _blocked(size)
    if blocked:
        block_max, kept, kept_log_r = _block_candidates(shifted, log_r)
        tau_lo, tau_hi = _bracket(div, *_top_entry(kept[..., :BLOCK], kept_log_r[..., :BLOCK]), *_reference_extent(log_r))
    else:
        tau_lo, tau_hi = bisection_bracket(div, shifted, log_r)
    if num_iterations is None:
        num_iterations = bisection_iterations(jnp.max(tau_hi - tau_lo), shifted.dtype)

    def solve(scores, weights):
        lo, hi = _halvings(div, scores, weights, tau_lo, tau_hi, num_iterations)
        return lo, hi, jnp.sum(_masses(div, scores, hi, weights), axis=-1, keepdims=True)

    def on_full_rows():
        return solve(shifted, jnp.exp(log_r))

    if not prune:
        return on_full_rows()
    line = tau_lo + div.f_prime_zero
    if blocked:
        exact = jnp.all(_count_above(block_max, line) <= CANDIDATE_BLOCKS)
        candidate_scores, candidate_weights = kept, jnp.exp(kept_log_r)
    else:
        # At most `candidates` scores above the pruning line: all of them are among the top ones.
        exact = jnp.all(_count_above(shifted, line) <= candidates)
        candidate_scores, index = jax.lax.top_k(shifted, candidates)
        candidate_weights = jnp.exp(jnp.take_along_axis(log_r, index, axis=-1))
    return jax.lax.cond(exact, lambda: solve(candidate_scores, candidate_weights), on_full_rows)


def solve_threshold(
    div: FDivergence, x: Array, log_r: Array, num_iterations: int | None = None, candidates: int | None = CANDIDATES
):
    """Bisection on ``phi(tau) = 1`` for the unit-temperature problem.

    Args:
      div: an f-divergence (:mod:`mdvi.f_divergences`).
      x: scores ``[..., A]``.
      log_r: log reference ``[..., A]`` (``-inf`` outside the support; the support must be non-empty).
      num_iterations: halvings; ``None`` derives ``ceil(log2(W / eps))`` from the bracket.
      candidates: largest scores kept when pruning is exact (sparse divergences; ``None``: never prune).

    Returns:
      ``(tau, tau_lo, tau_hi)``, each ``[..., 1]``, in the units of ``x`` (not shifted);
      ``tau`` is the midpoint of the final bracket ``[tau_lo, tau_hi]``.
    """
    chex.assert_equal_shape([x, log_r])
    _, shifted, x_max = _support_shift(x, log_r)
    lo, hi, _ = _bisect(div, shifted, log_r, num_iterations, candidates)
    return 0.5 * (lo + hi) + x_max, lo + x_max, hi + x_max


def _normalised(masses: Array, total: Array | None = None) -> tuple[Array, Array]:
    """``(p, log p)`` from unnormalised masses; ``total`` is their row sum when already known."""
    total = jnp.sum(masses, axis=-1, keepdims=True) if total is None else total
    p = masses / total
    log_p = jnp.where(p > 0, jnp.log(jnp.where(p > 0, p, 1.0)), -jnp.inf)
    return p, log_p


def bisection_solution(
    div: FDivergence, x: Array, log_r: Array, num_iterations: int | None = None, candidates: int | None = CANDIDATES
):
    """``(p, log p)`` of the f-softargmax by bisection (no custom derivative; see :func:`f_softargmax`)."""
    _, shifted, _ = _support_shift(x, log_r)
    _, hi, total = _bisect(div, shifted, log_r, num_iterations, candidates)
    return _normalised(_masses(div, shifted, hi, jnp.exp(log_r)), total)


#: Sizes of the partial sorts tried in turn by the sort-based solution, before a full sort.
PARTIAL_SORT_SIZES = (32, 128)


def _active_threshold(c_sorted: Array, r_sorted: Array, power: int) -> tuple[Array, Array]:
    """``(count, c_last)``: the size of the active set and its smallest ``c``, from descending ``c``.

    ``count`` counts the ``k`` with ``phi(c_(k)) < 1``, ``phi(c_(k)) = sum_{i<k} r_(i) (c_(i) - c_(k))^m``.
    """
    finite = jnp.isfinite(c_sorted)
    c_safe = jnp.where(finite, c_sorted, 0.0)

    def exclusive_cumsum(v):
        return jnp.cumsum(v, axis=-1) - v

    mass = exclusive_cumsum(r_sorted)
    first = exclusive_cumsum(r_sorted * c_safe)
    if power == 1:
        phi = first - c_safe * mass
    else:
        second = exclusive_cumsum(r_sorted * c_safe**2)
        phi = second - 2.0 * c_safe * first + c_safe**2 * mass
    count = jnp.sum(finite & (phi < 1.0), axis=-1, keepdims=True)
    return count, jnp.take_along_axis(c_sorted, jnp.maximum(count - 1, 0), axis=-1)


def _sorted_threshold(c_sorted: Array, r_sorted: Array, power: int) -> tuple[Array, Array, Array, Array]:
    """``(count, c_last, s, total)`` from descending ``c``: active-set size, smallest active ``c``,
    threshold, sum of the masses."""
    count, c_last = _active_threshold(c_sorted, r_sorted, power)
    active = jnp.arange(c_sorted.shape[-1]) < count
    c_active = jnp.where(active, c_sorted, 0.0)
    r_active = jnp.where(active, r_sorted, 0.0)
    total_r = jnp.sum(r_active, axis=-1, keepdims=True)
    mean = jnp.sum(r_active * c_active, axis=-1, keepdims=True) / total_r
    if power == 1:
        threshold = mean - 1.0 / total_r
    else:
        spread = jnp.sum(r_active * (c_active - mean) ** 2, axis=-1, keepdims=True) / total_r
        threshold = mean - jnp.sqrt(jnp.maximum(1.0 / total_r - spread, 0.0))
    masses = r_active * jnp.maximum(c_active - threshold, 0.0) ** power
    return count, c_last, threshold, jnp.sum(masses, axis=-1, keepdims=True)


def sorted_alpha_solution(alpha: float, x: Array, log_r: Array, partial: int | tuple[int, ...] | None = PARTIAL_SORT_SIZES):
    """Exact alpha-divergence f-softargmax for ``alpha`` in {2, 1.5} and any reference, by sorting.

    With ``c = 1 + (alpha - 1) x`` the solution is ``p_j = r_j [c_j - s]_+^m``, ``m = 1 / (alpha - 1)``
    (1 for sparsemax, 2 for 1.5-entmax). The active set is a top segment of ``c``: with
    ``phi(s) = sum_j r_j [c_j - s]_+^m`` decreasing, ``c_(k) > s*`` iff ``phi(c_(k)) < 1``, and
    ``phi(c_(k)) = sum_{i<k} r_(i) (c_(i) - c_(k))^m`` is a prefix sum over the sorted order. On the
    active set ``s`` solves a linear (alpha = 2) or quadratic (alpha = 1.5) equation. For the unit
    reference this is sparsemax (Martins & Astudillo 2016) and 1.5-entmax (Peters et al. 2019).

    Sorting is slow on CPUs, so only the ``P`` largest entries are sorted first (``lax.top_k``), for
    each ``P`` of ``partial`` in increasing order, then all of them. The partial sort certifies
    itself: if its last entry is inactive (``phi(c_(P)) >= 1``, so ``s* >= c_(P)``), every entry
    outside the top ``P`` has ``c_j <= c_(P) <= s*`` and no mass, and the threshold and the
    normalising total of the top ``P`` entries are those of the whole row. A size is used when this
    holds on every row of the batch (as in the entmax package's top-k with growing ``k``).
    ``partial=None`` always sorts fully. On rows of a multiple of ``BLOCK`` entries the top ``P``
    are taken from the ``P`` strided blocks with the largest maxima, which hold them: each block
    holding one of them has a maximum at least the ``P``-th largest entry. The solution itself is
    then one elementwise pass over the rows.
    """
    if alpha not in (1.5, 2.0):
        raise ValueError(f"alpha must be 1.5 or 2 for the sort-based solution, got {alpha}")
    power = 1 if alpha == 2.0 else 2
    size = x.shape[-1]
    sizes = () if partial is None else (partial,) if isinstance(partial, int) else tuple(partial)
    sizes = tuple(k for k in sorted(set(sizes)) if k < size)

    # Every pass below recomputes c from one materialised copy of x and log r. Without the
    # barrier XLA may contract the producer of x (say q / t) into the subtraction of x_max in
    # some fusions and not others, and the entries sorted would not be those of the final pass.
    # With it, c = 1 + (alpha - 1) (x - x_max) rounds the same everywhere (alpha - 1 in {1/2, 1}
    # multiplies exactly).
    x, log_r = jax.lax.optimization_barrier((x, log_r))

    def scores_of(x, log_r):  # x on the support, -inf off it (the penalty is 0 or -inf)
        return x + _support_penalty(log_r)

    if any(_blocked(size, k) for k in sizes):
        block_max = _block_maxima(scores_of, x, log_r)
        x_max = jnp.max(block_max, axis=-1, keepdims=True)
    else:
        x_max = jnp.max(scores_of(x, log_r), axis=-1, keepdims=True)

    def c_of(x, log_r):  # 1 at the top, -inf outside the support
        return 1.0 + (alpha - 1.0) * (scores_of(x, log_r) - x_max)

    def top_entries(k):
        x_kept, log_r_kept = _top_blocks(block_max, k, x, log_r) if _blocked(size, k) else (x, log_r)
        c_top, index = jax.lax.top_k(c_of(x_kept, log_r_kept), k)
        return _sorted_threshold(c_top, jnp.exp(jnp.take_along_axis(log_r_kept, index, axis=-1)), power)

    def full_sort():
        neg_sorted, r_sorted = jax.lax.sort((-c_of(x, log_r), jnp.exp(log_r)), dimension=x.ndim - 1, num_keys=1)
        return _sorted_threshold(-neg_sorted, r_sorted, power)[1:]

    def threshold_from(sizes):
        if not sizes:
            return full_sort()
        count, *solution = top_entries(sizes[0])
        exact = jnp.all(count < sizes[0])  # the last sorted entry is inactive on every row
        return jax.lax.cond(exact, lambda: tuple(solution), lambda: threshold_from(sizes[1:]))

    c_last, threshold, total = threshold_from(sizes)
    c = c_of(x, log_r)
    # 1 where c >= c_last (the sorted active set), else 0, by arithmetic: no selects in the rows,
    # so that the row sums of the derivative fuse this pass instead of reading a written copy
    in_active_set = 1.0 - jnp.sign(jnp.maximum(c_last - c, 0.0))
    masses = in_active_set * jnp.exp(log_r) * jnp.maximum(c - threshold, 0.0) ** power
    return _normalised(masses, total)


# ---------------------------------------------------------------------------------------------
# The f-softargmax with implicit derivatives
# ---------------------------------------------------------------------------------------------


def curvature_weights(div: FDivergence, p: Array, log_p: Array, log_r: Array) -> Array:
    """``w_j = r_j / f''(p_j / r_j)`` on the active set, 0 elsewhere (generic form)."""
    active = p > 0
    safe_log_r = jnp.where(active, log_r, 0.0)
    u = jnp.exp(jnp.where(active, log_p, 0.0) - safe_log_r)
    return jnp.where(active, jnp.exp(safe_log_r) / div.f_second(u), 0.0)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def f_softargmax(div: FDivergence, x: Array, log_r: Array) -> tuple[Array, Array]:
    """``(p, log p)`` with ``p = argmax_{p in simplex} <p, x> - D_f(p || r)`` (unit temperature).

    Uses the divergence's closed form when it has one and its ``solver`` allows it, else the
    bisection. Derivatives are implicit (module docstring), in ``x`` and in ``log_r``.
    """
    chex.assert_equal_shape([x, log_r])
    if div.uses_closed_form:
        return div.closed_form(x, log_r)
    return bisection_solution(div, x, log_r)


@functools.partial(f_softargmax.defjvp, symbolic_zeros=True)
def _f_softargmax_jvp(div, primals, tangents):
    # symbolic zeros: the common case differentiates in x only, and a zero tangent of log_r would
    # otherwise cost a pass over the rows
    x, log_r = primals
    dx, dlog_r = tangents
    p, log_p = f_softargmax(div, x, log_r)
    w = div.curvature_weights(p, log_p, log_r)
    sum_w = jnp.sum(w, -1, keepdims=True)
    dp = jnp.zeros_like(p)
    if not isinstance(dx, SymbolicZero):
        # w = 0 off the active set. No mask on dx (tangents there must be finite, as for the
        # softmax): a select in this rule becomes, in the transposed rule, one more pass over the
        # rows after the row sums. The two products are kept distinct for the same reason: shared,
        # XLA:CPU writes w * dx out before summing it.
        dp = w * dx - (w / sum_w) * jnp.sum(w * dx, -1, keepdims=True)
    if not isinstance(dlog_r, SymbolicZero):
        p_dlog_r = p * jnp.where(log_r > -jnp.inf, dlog_r, 0.0)
        dp = dp + p_dlog_r - w * (jnp.sum(p_dlog_r, -1, keepdims=True) / sum_w)
    dlog_p = jnp.where(p > 0, dp / jnp.where(p > 0, p, 1.0), 0.0)
    return (p, log_p), (dp, dlog_p)


def _expand_temperature(temperature, q: Array) -> Array:
    return jnp.expand_dims(jnp.asarray(temperature, dtype=q.dtype), -1)


def _hard_max_log_policy(q: Array, support: Array) -> Array:
    """Uniform over the maximisers of ``q`` inside the support (the ``t -> 0`` step)."""
    q_max = jnp.max(jnp.where(support, q, -jnp.inf), axis=-1, keepdims=True)
    is_max = support & (q == q_max)
    count = jnp.sum(is_max, axis=-1, keepdims=True).astype(q.dtype)
    return jnp.where(is_max, -jnp.log(count), -jnp.inf)


def regularized_policy(div: FDivergence, q: Array, t: Array, log_r: Array) -> tuple[Array, Array]:
    """``(p, log p)`` of ``argmax <p, q> - t D_f(p || r)``; ``t = 0`` is the hard max over the support.

    ``t`` is ``[..., 1]`` (it broadcasts against ``q``); derivatives are implicit.
    """
    positive = t > 0
    safe_t = jnp.where(positive, t, jnp.ones_like(t))
    p_soft, log_soft = f_softargmax(div, q / safe_t, log_r)
    log_hard = _hard_max_log_policy(q, log_r > -jnp.inf)
    log_p = jnp.where(positive, log_soft, log_hard)
    return jnp.where(positive, p_soft, jnp.exp(log_hard)), log_p


def regularized_log_policy(div: FDivergence, q: Array, temperature, log_ref: Array) -> Array:
    """Log of ``argmax_p <p, q> - temperature D_f(p || ref)`` (action axis last)."""
    chex.assert_equal_shape([q, log_ref])
    return regularized_policy(div, q, _expand_temperature(temperature, q), log_ref)[1]


# ---------------------------------------------------------------------------------------------
# The conjugate (regularized soft value)
# ---------------------------------------------------------------------------------------------


def envelope_log_ref_terms(div: FDivergence, p: Array, log_p: Array, log_r: Array) -> Array:
    """``d/d log r_j`` of ``r_j f(p_j / r_j)`` at fixed ``p``: ``r_j (f(u_j) - u_j f'(u_j))``, 0 off the support."""
    support = log_r > -jnp.inf
    active = p > 0
    safe_log_r = jnp.where(support, log_r, 0.0)
    u = jnp.exp(jnp.where(active, log_p, 0.0) - safe_log_r)
    inside = div.f(u) - u * div.f_prime(u)
    f_zero = div.f_zero if math.isfinite(div.f_zero) else 0.0  # non-sparse p only hits 0 by underflow
    return jnp.where(support, jnp.exp(safe_log_r) * jnp.where(active, inside, f_zero), 0.0)


def _inner_product(p: Array, scores: Array) -> Array:
    """``sum_j p_j scores_j`` with ``0 * (-inf) = 0``."""
    return jnp.sum(jnp.where(p > 0, p * scores, 0.0), axis=-1)


def _value_and_policy(div: FDivergence, q: Array, t: Array, log_r: Array):
    """``(value, D_f(p || r), p, log p)`` at temperature ``t`` (``[..., 1]``)."""
    support = log_r > -jnp.inf
    p, log_p = regularized_policy(div, q, t, log_r)
    q_max = jnp.max(jnp.where(support, q, -jnp.inf), axis=-1, keepdims=True)
    t = jnp.squeeze(t, -1)
    divergence = div.divergence(log_p, log_r)
    penalty = jnp.where(t > 0, t * divergence, 0.0)
    return jnp.squeeze(q_max, -1) + _inner_product(p, q - q_max) - penalty, divergence, p, log_p


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _regularized_value(div: FDivergence, q: Array, t: Array, log_r: Array) -> Array:
    return _value_and_policy(div, q, t, log_r)[0]


@_regularized_value.defjvp
def _regularized_value_jvp(div, primals, tangents):
    q, t, log_r = primals
    dq, dt, dlog_r = tangents
    value, divergence, p, log_p = _value_and_policy(div, q, t, log_r)
    positive = jnp.squeeze(t, -1) > 0
    d_from_q = jnp.sum(jnp.where(p > 0, p * dq, 0.0), axis=-1)
    d_from_t = jnp.where(positive, -divergence * jnp.squeeze(dt, -1), 0.0)
    dlog_r = jnp.where(log_r > -jnp.inf, dlog_r, 0.0)
    ref_terms = envelope_log_ref_terms(div, p, log_p, log_r)
    d_from_ref = -jnp.squeeze(t, -1) * jnp.sum(ref_terms * dlog_r, axis=-1)
    d_from_ref = jnp.where(positive, d_from_ref, 0.0)
    return value, jnp.broadcast_to(d_from_q + d_from_t + d_from_ref, value.shape)


def regularized_value(div: FDivergence, q: Array, temperature, log_ref: Array) -> Array:
    """``max_p <p, q> - temperature D_f(p || ref)`` from the solution (reduced over the last axis).

    Computed as ``max q + <p, q - max q> - t D_f(p || ref)``; ``temperature = 0`` gives the max over
    the support. Gradients by the envelope theorem (module docstring), so ``d/dq = p``.
    """
    chex.assert_equal_shape([q, log_ref])
    t = _expand_temperature(temperature, q)
    t = jnp.broadcast_to(t, jnp.broadcast_shapes(t.shape, q.shape[:-1] + (1,)))
    return _regularized_value(div, q, t, log_ref)
