"""Finite MDPs with known transition tensors, and generators with known ground truth.

A :class:`TabularMDP` is validated once, on the host, when it is built; solvers then work on
its jittable view :meth:`TabularMDP.model` (a :class:`TabularModel` of JAX arrays).
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

ROW_SUM_TOLERANCE = 1e-6


class TabularModel(NamedTuple):
    """Jittable arrays of a tabular MDP.

    Attributes:
      reward: ``r[S, A]``.
      discount: scalar ``gamma``.
      next_states: ``[S, A, N]`` successor lists (padded by repeating the last successor).
      next_probs: ``[S, A, N]`` their probabilities (0 on padding).
      dense: the full ``P[S, A, S]``, or ``None`` when the successor lists are the cheaper
        representation (then expectations gather from the lists).
    """

    reward: jnp.ndarray
    discount: jnp.ndarray
    next_states: jnp.ndarray
    next_probs: jnp.ndarray
    dense: jnp.ndarray | None

    @property
    def num_states(self) -> int:
        return self.reward.shape[0]

    @property
    def num_actions(self) -> int:
        return self.reward.shape[1]


def _fail(message: str):
    raise ValueError(message)


def _index(array_index) -> tuple[int, ...]:
    return tuple(int(i) for i in array_index)


# -------------------------------------------------------------------------------------------
# Checks shared by the MDP classes and generators here and in envs/linear.py
# -------------------------------------------------------------------------------------------


def _is_scalar_of(value, kind) -> bool:
    """A NumPy scalar or a 0-d NumPy / JAX array whose dtype is a sub-dtype of ``kind``."""
    dtype = getattr(value, "dtype", None)
    return dtype is not None and getattr(value, "shape", None) == () and jnp.issubdtype(dtype, kind)


def check_real(value, name: str) -> float:
    """``value`` as a float: a Python, NumPy or 0-d (NumPy or JAX) array real number.

    Bools, strings, complex numbers, arrays with a shape and traced values are refused with a
    ``ValueError`` naming ``name``. NaN passes: the caller's range check refuses it.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if _is_scalar_of(value, jnp.integer) or _is_scalar_of(value, jnp.floating):
        try:
            return float(value)
        except Exception:  # a tracer: no concrete value to check
            _fail(f"{name} must be a concrete real number, got {value!r}")
    _fail(f"{name} must be a real number, got {value!r}")


def check_count(value, name: str, minimum: int = 1) -> int:
    """``value`` as an int ``>= minimum``: a Python or NumPy integer or a 0-d integer array.

    Non-integers (``3.5``, but also ``3.0``: a count is an integer), bools and strings are
    refused with a ``ValueError`` naming ``name``.
    """
    if not (isinstance(value, int) and not isinstance(value, bool)) and not _is_scalar_of(value, jnp.integer):
        _fail(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if value < minimum:
        _fail(f"{name} must be >= {minimum}, got {value}")
    return value


def check_discount(discount) -> float:
    """``gamma`` as a float in ``[0, 1)`` (NaN refused)."""
    gamma = check_real(discount, "discount")
    if not 0.0 <= gamma < 1.0:
        _fail(f"discount must lie in [0, 1), got {gamma}")
    return gamma


def check_value_scale(rewards: np.ndarray, discount: float, dtype=np.float64, name: str = "rewards"):
    """Refuse rewards whose value scale ``max |r| / (1 - gamma)`` is not safely finite.

    Values are bounded by ``max |r| / (1 - gamma)`` and the variance-weighted methods square
    them (``Var V = E V^2 - (E V)^2``), so the bound is ``sqrt`` of the largest ``dtype``
    number: beyond it a value or its square overflows and gaps turn into NaN.
    """
    limit = math.sqrt(float(jnp.finfo(dtype).max))
    with np.errstate(over="ignore"):
        scale = float(np.max(np.abs(rewards), initial=0.0)) / (1.0 - discount)
    if not scale <= limit:
        _fail(
            f"{name} are too large for discount {discount:g}: max |r| / (1 - gamma) = {scale:.3g} "
            f"exceeds {limit:.3g} (the square root of the largest {np.dtype(dtype).name}), beyond "
            "which values or their squares overflow"
        )


def check_rows_sum_to_one(P: np.ndarray, label: str) -> np.ndarray:
    """The row sums of ``P[S, A, S]``; a ``ValueError`` if one is off 1 by more than the tolerance."""
    sums = P.sum(-1)
    err = np.abs(sums - 1.0)
    if np.any(err > ROW_SUM_TOLERANCE):
        s, a = _index(np.unravel_index(np.argmax(err), err.shape))
        _fail(
            f"{label} rows must sum to 1 (tolerance {ROW_SUM_TOLERANCE}): "
            f"P[{s}, {a}, :] sums to {sums[s, a]:.9g}"
        )
    return sums


@dataclasses.dataclass(frozen=True, eq=False)
class TabularMDP:
    """A finite discounted MDP ``(P, r, gamma, mu0)``.

    Args:
      transitions: ``P[S, A, S]``; each row ``P[s, a]`` is a probability vector.
      rewards: ``r[S, A]``, finite.
      discount: ``gamma`` in [0, 1).
      initial: initial state distribution ``[S]`` (uniform if omitted).
      name: a label carried into results.

    Raises:
      ValueError: naming the problem, for shape mismatches, NaN or infinite entries, negative
        probabilities, rows that do not sum to 1 (within ``1e-6``), a discount that is not a
        real number (a 0-d real array is one) in [0, 1), or rewards so large that
        ``max |r| / (1 - gamma)`` is not safely finite (:func:`check_value_scale`).
    """

    transitions: np.ndarray
    rewards: np.ndarray
    discount: float
    initial: np.ndarray | None = None
    name: str = "mdp"

    def __post_init__(self):
        P = np.asarray(self.transitions, dtype=np.float64)
        r = np.asarray(self.rewards, dtype=np.float64)
        if P.ndim != 3:
            _fail(f"transitions must have shape [S, A, S], got rank {P.ndim} shape {P.shape}")
        S, A, S2 = P.shape
        if S != S2:
            _fail(f"transitions must have shape [S, A, S]: got {P.shape} ({S} != {S2})")
        if S == 0 or A == 0:
            _fail(f"an MDP needs at least one state and one action, got shape {P.shape}")
        if r.shape != (S, A):
            _fail(f"rewards must have shape [S, A] = {(S, A)} to match transitions, got {r.shape}")
        if not np.all(np.isfinite(P)):
            bad = _index(np.argwhere(~np.isfinite(P))[0])
            _fail(f"transitions contain NaN or inf, first at index {bad}")
        if not np.all(np.isfinite(r)):
            bad = _index(np.argwhere(~np.isfinite(r))[0])
            _fail(f"rewards contain NaN or inf, first at (s, a) = {bad}")
        if np.any(P < 0):
            bad = _index(np.argwhere(P < 0)[0])
            _fail(f"transition probabilities must be >= 0, P{bad} = {P[bad]:.6g}")
        sums = check_rows_sum_to_one(P, "transition")
        gamma = check_discount(self.discount)
        check_value_scale(r, gamma)
        if self.initial is None:
            mu0 = np.full(S, 1.0 / S)
        else:
            mu0 = np.asarray(self.initial, dtype=np.float64)
            if mu0.shape != (S,):
                _fail(f"initial distribution must have shape [S] = {(S,)}, got {mu0.shape}")
            if not np.all(np.isfinite(mu0)) or np.any(mu0 < 0):
                _fail("initial distribution must be finite and >= 0")
            if abs(mu0.sum() - 1.0) > ROW_SUM_TOLERANCE:
                _fail(f"initial distribution must sum to 1, sums to {mu0.sum():.9g}")
        # Renormalise within tolerance so downstream sums are exact to rounding.
        P = P / sums[..., None]
        for attr, value in (("transitions", P), ("rewards", r), ("initial", mu0)):
            value.setflags(write=False)
            object.__setattr__(self, attr, value)
        object.__setattr__(self, "discount", gamma)

    # -- sizes ------------------------------------------------------------------------------
    @property
    def num_states(self) -> int:
        return self.transitions.shape[0]

    @property
    def num_actions(self) -> int:
        return self.transitions.shape[1]

    @property
    def horizon(self) -> float:
        """Effective horizon ``H = 1 / (1 - gamma)``."""
        return 1.0 / (1.0 - self.discount)

    @property
    def max_successors(self) -> int:
        return int((self.transitions > 0).sum(-1).max())

    # -- views ------------------------------------------------------------------------------
    def successors(self) -> tuple[np.ndarray, np.ndarray]:
        """Successor lists ``(next_states[S, A, N], next_probs[S, A, N])``, N = max support.

        Padding repeats the last real successor with probability 0, so an inverse-CDF draw
        that rounds past the last real cut point still lands on a real successor.
        """
        P = self.transitions
        n = self.max_successors
        order = np.argsort(P <= 0, axis=-1, kind="stable")[..., :n]  # support first, in order
        probs = np.take_along_axis(P, order, -1)
        count = (P > 0).sum(-1, keepdims=True)
        position = np.arange(n)
        last = np.take_along_axis(order, count - 1, -1)
        states = np.where(position < count, order, last)
        probs = np.where(position < count, probs, 0.0)
        return states.astype(np.int32), probs

    def model(self, representation: str = "auto", dtype=None) -> TabularModel:
        """Jittable arrays. ``representation``: ``"dense"``, ``"sparse"`` or ``"auto"``.

        ``auto`` keeps the dense tensor only when the successor lists would be longer than a
        quarter of the state space. ``dtype`` defaults to JAX's default float (float64 under
        ``jax.enable_x64``); rewards whose value scale overflows it are refused
        (:func:`check_value_scale`).
        """
        if representation not in ("auto", "dense", "sparse"):
            raise ValueError(f"representation must be auto, dense or sparse, got {representation!r}")
        dtype = dtype or jnp.result_type(float)
        check_value_scale(self.rewards, self.discount, dtype)
        states, probs = self.successors()
        dense = representation == "dense" or (
            representation == "auto" and states.shape[-1] * 4 > self.num_states
        )
        return TabularModel(
            reward=jnp.asarray(self.rewards, dtype),
            discount=jnp.asarray(self.discount, dtype),
            next_states=jnp.asarray(states),
            next_probs=jnp.asarray(probs, dtype),
            dense=jnp.asarray(self.transitions, dtype) if dense else None,
        )

    def with_discount(self, discount: float) -> TabularMDP:
        return dataclasses.replace(self, discount=discount)


# -------------------------------------------------------------------------------------------
# Generators
# -------------------------------------------------------------------------------------------


def garnet(
    num_states: int,
    num_actions: int,
    branching: int,
    discount: float = 0.9,
    seed: int = 0,
) -> TabularMDP:
    """Garnet(N_S, N_A, N_B) (Archibald, McKinnon & Thomas 1995).

    Each pair ``(s, a)`` gets ``N_B`` distinct successors drawn uniformly without replacement;
    their probabilities are the gaps between ``N_B - 1`` sorted U(0, 1) cut points (a uniform
    draw from the simplex). Reward convention: ``r(s, a) ~ U(0, 1)`` i.i.d.
    """
    num_states = check_count(num_states, "num_states")
    num_actions = check_count(num_actions, "num_actions")
    branching = check_count(branching, "branching")
    if branching > num_states:
        raise ValueError(f"branching N_B must lie in [1, num_states={num_states}], got {branching}")
    seed = check_count(seed, "seed", minimum=0)
    rng = np.random.default_rng(seed)
    P = np.zeros((num_states, num_actions, num_states))
    cuts = np.sort(rng.random((num_states, num_actions, branching - 1)), axis=-1)
    edges = np.concatenate(
        [np.zeros((num_states, num_actions, 1)), cuts, np.ones((num_states, num_actions, 1))], -1
    )
    probs = np.diff(edges, axis=-1)
    for s in range(num_states):
        for a in range(num_actions):
            succ = rng.choice(num_states, size=branching, replace=False)
            P[s, a, succ] = probs[s, a]
    # Cut points can coincide with probability ~0; keep rows valid regardless.
    rewards = rng.random((num_states, num_actions))
    return TabularMDP(P, rewards, discount, name=f"garnet-{num_states}x{num_actions}x{branching}")


def _check_slip(slip) -> float:
    slip = check_real(slip, "slip")
    if not 0.0 <= slip <= 1.0:
        raise ValueError(f"slip must lie in [0, 1], got {slip}")
    return slip


def chain(num_states: int, slip: float = 0.1, discount: float = 0.9) -> TabularMDP:
    """A chain with actions 0 = left, 1 = right; a move slips to the other direction w.p. ``slip``.

    Moves off either end stay put. Reward 1 in the rightmost state (any action), 0.1 in the
    leftmost, 0 elsewhere: a near "distractor" and a far goal.
    """
    S = check_count(num_states, "num_states", minimum=2)
    slip = _check_slip(slip)
    P = np.zeros((S, 2, S))
    for s in range(S):
        left, right = max(s - 1, 0), min(s + 1, S - 1)
        P[s, 0, left] += 1 - slip
        P[s, 0, right] += slip
        P[s, 1, right] += 1 - slip
        P[s, 1, left] += slip
    r = np.zeros((S, 2))
    r[-1, :] = 1.0
    r[0, :] = 0.1
    mu0 = np.zeros(S)
    mu0[S // 2] = 1.0
    return TabularMDP(P, r, discount, mu0, name=f"chain-{S}")


GRID_MOVES = ((-1, 0), (0, 1), (1, 0), (0, -1))  # up, right, down, left


def gridworld(size: int, slip: float = 0.1, discount: float = 0.9) -> TabularMDP:
    """A ``size x size`` grid; actions up/right/down/left; walls keep the agent in place.

    With probability ``slip`` the move goes in a uniformly random direction (of the four)
    instead. The goal (bottom-right) pays 1 per step spent in it and is not absorbing; the
    start is the top-left corner.
    """
    size = check_count(size, "size", minimum=2)
    slip = _check_slip(slip)
    S = size * size
    P = np.zeros((S, 4, S))

    def move(s, d):
        row, col = divmod(s, size)
        dr, dc = GRID_MOVES[d]
        nr, nc = row + dr, col + dc
        if 0 <= nr < size and 0 <= nc < size:
            return nr * size + nc
        return s

    for s in range(S):
        for a in range(4):
            P[s, a, move(s, a)] += 1 - slip
            for d in range(4):
                P[s, a, move(s, d)] += slip / 4
    r = np.zeros((S, 4))
    r[S - 1, :] = 1.0
    mu0 = np.zeros(S)
    mu0[0] = 1.0
    return TabularMDP(P, r, discount, mu0, name=f"grid-{size}x{size}")


def arm_mdp(discount: float, epsilon: float, num_arms: int = 4) -> TabularMDP:
    """The hard "arm" MDP, after the lower-bound construction of Azar, Munos & Kappen (2013).

    States: the decision state ``x`` (0), arms ``y_1..y_A`` (1..A) and an absorbing state
    ``z`` (A + 1). From ``x`` action ``a`` moves to ``y_a`` (reward 0). Each arm pays 1 and
    stays with probability ``p_a``, else falls into ``z`` (reward 0 forever). All arms use
    ``p = (4 gamma - 1) / (3 gamma)`` (so ``V(y) = 1 / (1 - gamma p) = 3 / (4 (1 - gamma))``
    and the per-step variance is about ``(1 - gamma) H^2``) except arm 1, whose ``p_1`` is set
    so that ``Q*(x, 1) - Q*(x, a) = gamma (V(y_1) - V(y)) = 2 epsilon`` exactly:
    ``V(y_1) = V(y) + 2 epsilon / gamma`` and ``p_1 = (1 - 1 / V(y_1)) / gamma``. An epsilon-optimal policy must then pick arm 1
    at ``x`` (other states have a single effective action).
    """
    gamma = check_real(discount, "discount")
    if not 0.25 <= gamma < 1.0:
        raise ValueError(f"the arm MDP needs discount in [1/4, 1), got {gamma}")
    epsilon = check_real(epsilon, "epsilon")
    if not 0 < epsilon < math.inf:
        raise ValueError(f"epsilon must be finite and > 0, got {epsilon}")
    num_arms = check_count(num_arms, "num_arms", minimum=2)
    p = (4 * gamma - 1) / (3 * gamma)
    v_arm = 1.0 / (1.0 - gamma * p)
    v_best = v_arm + 2.0 * epsilon / gamma
    p_best = (1.0 - 1.0 / v_best) / gamma
    if not p_best <= 1.0:
        raise ValueError(
            f"epsilon={epsilon} is too large for discount {gamma}: the best arm would need "
            f"staying probability {p_best:.4f} > 1 (need 2 eps / gamma <= 1/(1-gamma) - V(y))"
        )
    A = num_arms
    S = A + 2
    z = A + 1
    P = np.zeros((S, A, S))
    r = np.zeros((S, A))
    for a in range(A):
        P[0, a, 1 + a] = 1.0
    for arm in range(A):
        stay = p_best if arm == 0 else p
        P[1 + arm, :, 1 + arm] = stay
        P[1 + arm, :, z] = 1.0 - stay
        r[1 + arm, :] = 1.0
    P[z, :, z] = 1.0
    mu0 = np.zeros(S)
    mu0[0] = 1.0
    return TabularMDP(P, r, gamma, mu0, name=f"arm-H{1 / (1 - gamma):.0f}-eps{epsilon:g}")


GENERATORS = {
    "garnet": garnet,
    "chain": chain,
    "gridworld": gridworld,
    "arm": arm_mdp,
}


def horizon_to_discount(horizon: float) -> float:
    """``gamma = 1 - 1 / H``."""
    horizon = check_real(horizon, "horizon")
    if not (horizon >= 1 and math.isfinite(horizon)):
        raise ValueError(f"horizon must be finite and >= 1, got {horizon}")
    return 1.0 - 1.0 / horizon
