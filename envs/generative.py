"""A generative model (simulator) of a tabular MDP: i.i.d. next states for chosen pairs.

The simulator of :class:`envs.tabular.TabularModel` (and of a linear MDP through its tabular
view), used by sampled MDVI, LS-MDVI and VWLS-MDVI in :mod:`mdvi`. Every function here says
exactly how many simulator calls it makes; the solvers add these up, so reported sample
counts are exact. One call = one next state drawn for one (s, a).
"""

from __future__ import annotations

import dataclasses
import math

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


def sample_next_states_at(key: Array, model: TabularModel, states: Array, actions: Array, samples: int) -> Array:
    """Draw ``samples`` i.i.d. next states at each listed pair: ``[m, samples]`` state indices.

    ``states`` and ``actions`` are ``[m]`` integer arrays. Calls: ``m * samples``.
    """
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    chex.assert_equal_shape([states, actions])
    cdf = jnp.cumsum(model.next_probs[states, actions], axis=-1)
    uniforms = jax.random.uniform(key, (states.shape[0], samples), dtype=cdf.dtype)
    slot = _inverse_cdf(cdf, uniforms)
    return jnp.take_along_axis(model.next_states[states, actions], slot, axis=-1)


def all_pairs(model: TabularModel) -> tuple[Array, Array]:
    """``(states, actions)`` of every pair in state-major order (pair ``s * A + a``)."""
    S, A = model.reward.shape
    return jnp.repeat(jnp.arange(S), A), jnp.tile(jnp.arange(A), S)


def sample_next_states(key: Array, model: TabularModel, samples_per_pair: int) -> Array:
    """Draw ``M`` i.i.d. next states for every pair: ``[S, A, M]`` state indices.

    The same draws as :func:`sample_next_states_at` on :func:`all_pairs` with the same key.
    Calls: ``S * A * M``.
    """
    if samples_per_pair < 1:
        raise ValueError(f"samples_per_pair must be >= 1, got {samples_per_pair}")
    S, A = model.reward.shape
    states, actions = all_pairs(model)
    return sample_next_states_at(key, model, states, actions, samples_per_pair).reshape(S, A, samples_per_pair)


# Below this mean count * min(p, 1 - p), binomial draws use inversion, above it BTRS.
_INVERSION_MAX_MEAN = 10.0


_LOG_FACTORIAL_TABLE = tuple(float(sum(math.log(i) for i in range(1, k + 1))) for k in range(10))


def _log_factorial(k: Array) -> Array:
    """``log k!``: a table below 10, else the Stirling series of ``log Gamma(k + 1)`` to ``z^-5``.

    The truncation error is below ``1 / (1680 z^7) < 1e-10`` for ``z = k + 1 >= 11``. The
    table is read with selects, not a gather (cheaper inside vmapped loops).
    """
    z = jnp.maximum(k, 10.0) + 1.0
    z2 = z * z
    value = (z - 0.5) * jnp.log(z) - z + 0.5 * math.log(2 * math.pi) + (1.0 / 12.0 - (1.0 / 360.0 - 1.0 / (1260.0 * z2)) / z2) / z
    for i, exact in enumerate(_LOG_FACTORIAL_TABLE):
        value = jnp.where(k == i, exact, value)
    return value


def binomial(key: Array, count: Array, prob: Array) -> Array:
    """Exact ``Binomial(count, prob)`` draws, elementwise (floats; ``count >= 0`` whole numbers).

    With ``q = min(p, 1 - p)`` (the draw is reflected when ``p > 1/2``):

    * ``count * q < 10``: inversion, a sequential search of the CDF from 0 with the pmf
      recursion ``f(k + 1) = f(k) (n - k) / (k + 1) q / (1 - q)`` (Kachitvichyanukul & Schmeiser
      1988, BINV), one uniform per draw;
    * otherwise BTRS, the transformed rejection with squeeze of Hormann (1993), with the
      acceptance test ``log f(k) - log f(m)`` computed from log-factorials (a table below 10,
      the Stirling series with error under 1e-10 above; float64 keeps the rounding far below
      Monte-Carlo error for counts up to ``1e9``); one try per lane and round, redrawn until
      every lane has accepted.

    Both are exact samplers; the loops only draw uniforms (much cheaper to compile and run
    under ``vmap`` than a sampler that splits keys inside its loops). ``count = 0``, ``p = 0``
    and ``p = 1`` are exact (0, 0 and ``count``).
    """
    prob = jnp.asarray(prob)
    dtype = jnp.result_type(prob, float)
    count, prob = jnp.broadcast_arrays(jnp.floor(jnp.asarray(count, dtype)), prob.astype(dtype))
    reflect = prob > 0.5
    q = jnp.where(reflect, 1.0 - prob, prob)
    inversion = count * q < _INVERSION_MAX_MEAN
    key_inversion, key_rejection = jax.random.split(key)

    # Inversion: lanes with a small mean (others run it with n = 0, which stops at once).
    n_inv = jnp.where(inversion, count, 0.0)
    q_inv = jnp.where(inversion, q, 0.0)
    ratio = q_inv / (1.0 - q_inv)
    u = jax.random.uniform(key_inversion, count.shape, dtype)
    pmf0 = jnp.exp(n_inv * jnp.log1p(-q_inv))

    def searching(carry):
        k, _, cdf = carry
        return (u > cdf) & (k < n_inv)

    def inversion_step(carry):
        k, pmf, cdf = carry
        go = searching(carry)
        pmf_next = pmf * (n_inv - k) / (k + 1.0) * ratio
        return jnp.where(go, k + 1.0, k), jnp.where(go, pmf_next, pmf), jnp.where(go, cdf + pmf_next, cdf)

    k_inv = jax.lax.while_loop(
        lambda carry: jnp.any(searching(carry)), inversion_step, (jnp.zeros_like(count), pmf0, pmf0)
    )[0]

    # BTRS: lanes with mean >= 10 (others run it on a dummy n = 100, q = 1/2 and are discarded).
    n = jnp.where(inversion, 100.0, count)
    p = jnp.where(inversion, 0.5, q)
    spq = jnp.sqrt(n * p * (1.0 - p))
    b = 1.15 + 2.53 * spq
    a = -0.0873 + 0.0248 * b + 0.01 * p
    c = n * p + 0.5
    v_r = 0.92 - 4.2 / b
    alpha = (2.83 + 5.1 / b) * spq
    log_odds = jnp.log(p / (1.0 - p))
    m = jnp.floor((n + 1.0) * p)
    log_fm = _log_factorial(m) + _log_factorial(n - m)

    def rejection_step(carry):
        r, done, k_out = carry
        uv = jax.random.uniform(jax.random.fold_in(key_rejection, r), (2, *count.shape), dtype)
        u_, v_ = uv[0] - 0.5, uv[1]
        us = 0.5 - jnp.abs(u_)
        k = jnp.floor((2.0 * a / us + b) * u_ + c)
        inside = (k >= 0) & (k <= n)
        k_safe = jnp.where(inside, k, m)
        log_ratio = log_fm - _log_factorial(k_safe) - _log_factorial(n - k_safe) + (k_safe - m) * log_odds
        accept = ((us >= 0.07) & (v_ <= v_r)) | (inside & (jnp.log(v_ * alpha / (a / (us * us) + b)) <= log_ratio))
        return r + 1, done | accept, jnp.where(accept & ~done, k, k_out)

    init = (jnp.array(0), inversion, jnp.zeros_like(count))
    k_btrs = jax.lax.while_loop(lambda carry: ~jnp.all(carry[1]), rejection_step, init)[2]

    k = jnp.where(inversion, k_inv, k_btrs)
    return jnp.where(reflect, count - k, k)


def successor_counts(key: Array, model: TabularModel, states: Array, actions: Array, draws: Array) -> Array:
    """How many of ``draws[i]`` i.i.d. next states of pair ``i`` land on each of its successors.

    ``n`` i.i.d. generative-model calls at one pair are, in distribution, one multinomial count
    vector ``Mult(n, P(. | s, a))`` over that pair's successor list (the counts are a
    sufficient statistic of the draws), and every sample mean or second moment is a function
    of the counts: the work does not grow with ``n`` while the accounting
    still counts ``n`` calls. Returns ``[m, N]`` counts (floats) aligned with
    ``model.next_states[states, actions]``; pairs with ``draws[i] = 0`` get zeros.
    Calls: ``sum(draws)``.
    """
    chex.assert_equal_shape([states, actions, draws])
    probs = model.next_probs[states, actions]  # [m, N]
    num_slots = probs.shape[-1]
    # Conditional binomials: c_j ~ Bin(n - c_0 - ... - c_{j-1}, p_j / (p_j + ... + p_{N-1})).
    # The last real successor gets conditional probability exactly 1 (and padding 0), so the
    # counts always sum to n; N - 1 binomials per pair (the last slot takes the remainder).
    tail = jnp.flip(jnp.cumsum(jnp.flip(probs, -1), -1), -1)
    conditional = jnp.where(tail > 0, probs / jnp.where(tail > 0, tail, 1.0), 0.0)
    remaining = draws.astype(probs.dtype)
    if num_slots == 1:
        return remaining[:, None]

    def slot(remaining, inputs):  # one binomial call site, scanned over the slots
        slot_key, p = inputs
        count = binomial(slot_key, remaining, jnp.clip(p, 0.0, 1.0))
        return remaining - count, count

    keys = jax.random.split(key, num_slots - 1)
    remaining, counts = jax.lax.scan(slot, remaining, (keys, conditional[:, :-1].T))
    return jnp.concatenate([counts.T, remaining[:, None]], axis=-1)


SAMPLERS = ("iid", "multinomial")


@dataclasses.dataclass(frozen=True)
class Sampling:
    """How the simulator's draws are made: the sampler and, for ``"iid"``, the draw cap.

    Attributes:
      sampler: ``"multinomial"`` (the count trick of :func:`successor_counts`: one count
        vector per pair, cost free of the number of draws) or ``"iid"`` (explicit draws via
        :func:`sample_next_states_at`). Both have the same distribution.
      max_draws: static bound on the draws per pair, needed by ``"iid"`` (the array of
        draws has this width; pairs with fewer draws mask the rest).

    Frozen and hashable: jitted solvers take it as one static argument.
    """

    sampler: str = "multinomial"
    max_draws: int | None = None

    def __post_init__(self):
        if self.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.sampler!r}; choose one of {SAMPLERS}")
        if self.max_draws is not None and not (isinstance(self.max_draws, int) and self.max_draws >= 1):
            raise ValueError(f"max_draws must be an integer >= 1 or None, got {self.max_draws!r}")

    def check(self) -> Sampling:
        """Refuse an ``"iid"`` sampler without its draw cap."""
        if self.sampler == "iid" and self.max_draws is None:
            raise ValueError("the iid sampler needs max_draws (a static bound on the draws per pair)")
        return self


DEFAULT_SAMPLING = Sampling()


def sampled_means_at(
    key: Array,
    model: TabularModel,
    states: Array,
    actions: Array,
    draws: Array,
    values: Array,
    sampling: Sampling = DEFAULT_SAMPLING,
) -> Array:
    """Sample means of ``values(s')`` over ``draws[i]`` i.i.d. next states of each listed pair.

    Args:
      states, actions, draws: ``[m]``; ``draws`` may differ per pair (0 gives a mean of 0)
        and may be traced.
      values: ``[S]`` or ``[V, S]`` (several functions estimated from the same draws).
      sampling: the sampler; ``"iid"`` needs ``max_draws >= max(draws)``.
    Returns:
      ``[m]`` or ``[V, m]``. Calls: ``sum(draws)``.
    """
    sampling.check()
    values = jnp.asarray(values)
    if values.ndim not in (1, 2):
        raise ValueError(f"values must be [S] or [V, S], got shape {values.shape}")
    draws = jnp.asarray(draws)
    if sampling.sampler == "multinomial":
        counts = successor_counts(key, model, states, actions, draws)
        totals = jnp.sum(counts * values[..., model.next_states[states, actions]], axis=-1)
    else:
        next_states = sample_next_states_at(key, model, states, actions, sampling.max_draws)
        used = jnp.arange(sampling.max_draws) < draws[:, None]
        totals = jnp.sum(jnp.where(used, values[..., next_states], 0.0), axis=-1)
    return totals / jnp.maximum(draws, 1).astype(totals.dtype)


def sampled_expectation(
    key: Array, model: TabularModel, values: Array, samples_per_pair, sampler: str = "iid"
) -> Array:
    """Monte-Carlo estimate of ``E_{s' ~ P(s, a)} values(s')`` for every pair.

    :func:`sampled_means_at` with ``M`` draws at each pair of :func:`all_pairs`; with
    ``sampler="iid"`` the draws are those of :func:`sample_next_states` (``M`` static), with
    ``"multinomial"`` ``M`` may be traced.

    Returns:
      ``[S, A]`` or ``[V, S, A]`` sample means over ``M`` draws per pair. Calls: ``S * A * M``.
    """
    sampling = Sampling(sampler, samples_per_pair if sampler == "iid" else None)
    S, A = model.reward.shape
    states, actions = all_pairs(model)
    draws = jnp.full(states.shape, samples_per_pair)
    means = sampled_means_at(key, model, states, actions, draws, values, sampling)
    return means.reshape(*means.shape[:-1], S, A)


def calls_per_sweep(model: TabularModel, samples_per_pair: int) -> int:
    """Simulator calls made by one :func:`sampled_expectation` over all pairs."""
    S, A = model.reward.shape
    return S * A * samples_per_pair
