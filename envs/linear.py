"""Linear MDPs with known ground truth (Jin et al. 2020; Yang & Wang 2019).

A linear MDP has features ``phi(s, a) in R^d`` with ``P(s' | s, a) = <phi(s, a), mu(s')>`` and
``r(s, a) = <phi(s, a), theta_r>``. :class:`LinearMDP` stores ``phi[S, A, d]``, the next-state
factors ``mu[d, S]`` and ``theta_r[d]``, checks once that ``P = phi @ mu`` is a proper
transition kernel, and converts to the lab's :class:`~envs.tabular.TabularMDP` so that ground
truth comes from the exact tabular solvers.

Constructors: :func:`one_hot` (any tabular MDP), :func:`low_rank_mixture` (simplex features
times Garnet rows), :func:`kitamura_hard_mdp` (the two-state hard instance of Kitamura et al.
2023, arXiv 2305.13185, App. L) and three families built on it for the lab's sample-complexity
experiment: :func:`family_f1` (control), :func:`family_f2` (a risky sibling sharing the action
block: next-state variances differ strongly across design points that share coordinates, the
regime where variance weighting matters) and :func:`family_f3` (the same MDP with the sibling in
its own block: the negative control), plus two ways to sweep the dimension: :func:`block_copies`
(``k`` independent copies: ``d -> k d``, ``k`` decisions) and :func:`family_f4` (F2 with a
``d - 4``-dimensional shared action block: one decision; its docstring says which d-factors of
the bounds each measures). F1-F4 are registered by name in :data:`FAMILIES`.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np

from envs.tabular import (
    TabularMDP,
    check_count,
    check_discount,
    check_real,
    check_rows_sum_to_one,
    check_value_scale,
    garnet,
)

# Entries of phi @ mu down to this (absolute) are rounding and clipped to 0; below it is an error.
NEGATIVE_TOLERANCE = 1e-9


def _fail(message: str):
    raise ValueError(message)


@dataclasses.dataclass(frozen=True, eq=False)
class LinearMDP:
    """A linear MDP ``P(s' | s, a) = <phi(s, a), mu(s')>``, ``r(s, a) = <phi(s, a), theta_r>``.

    Args:
      features: ``phi[S, A, d]``, finite.
      factors: ``mu[d, S]``, finite (signed: only ``P = phi @ mu`` must be a kernel).
      reward_params: ``theta_r[d]``, finite.
      discount: ``gamma`` in [0, 1).
      initial: initial state distribution ``[S]`` (uniform if omitted).
      name: a label carried into results.

    Raises:
      ValueError: naming the problem, for shape mismatches, NaN or inf, a kernel entry below
        ``-1e-9``, a kernel row that does not sum to 1 (within ``1e-6``), a discount that is
        not a real number in [0, 1), rewards ``phi @ theta_r`` whose value scale
        ``max |r| / (1 - gamma)`` is not safely finite, or a bad initial distribution.
    """

    features: np.ndarray
    factors: np.ndarray
    reward_params: np.ndarray
    discount: float
    initial: np.ndarray | None = None
    name: str = "linear-mdp"

    def __post_init__(self):
        phi = np.asarray(self.features, dtype=np.float64)
        mu = np.asarray(self.factors, dtype=np.float64)
        theta = np.asarray(self.reward_params, dtype=np.float64)
        if phi.ndim != 3:
            _fail(f"features must have shape [S, A, d], got shape {phi.shape}")
        S, A, d = phi.shape
        if S == 0 or A == 0 or d == 0:
            _fail(f"features need S, A, d >= 1, got shape {phi.shape}")
        if mu.shape != (d, S):
            _fail(f"factors mu must have shape [d, S] = {(d, S)} to match features {phi.shape}, got {mu.shape}")
        if theta.shape != (d,):
            _fail(f"reward_params must have shape [d] = {(d,)}, got {theta.shape}")
        for label, array in (("features", phi), ("factors", mu), ("reward_params", theta)):
            if not np.all(np.isfinite(array)):
                bad = tuple(int(i) for i in np.argwhere(~np.isfinite(array))[0])
                _fail(f"{label} contain NaN or inf, first at index {bad}")
        P = np.einsum("sad,dn->san", phi, mu)
        if np.any(P < -NEGATIVE_TOLERANCE):
            s, a, n = (int(i) for i in np.unravel_index(np.argmin(P), P.shape))
            _fail(
                f"phi @ mu is not a transition kernel: P[{s}, {a}, {n}] = {P[s, a, n]:.6g} < 0 "
                "(check mu and the feature ranges)"
            )
        check_rows_sum_to_one(P, "phi @ mu")
        gamma = check_discount(self.discount)
        check_value_scale(phi @ theta, gamma, name="reward_params (rewards phi @ theta_r)")
        initial = None if self.initial is None else np.asarray(self.initial, dtype=np.float64)
        for attr, value in (("features", phi), ("factors", mu), ("reward_params", theta)):
            value.setflags(write=False)
            object.__setattr__(self, attr, value)
        object.__setattr__(self, "discount", gamma)
        object.__setattr__(self, "initial", initial)
        self.to_tabular()  # validates the initial distribution with the tabular rules

    # -- sizes ------------------------------------------------------------------------------
    @property
    def num_states(self) -> int:
        return self.features.shape[0]

    @property
    def num_actions(self) -> int:
        return self.features.shape[1]

    @property
    def dim(self) -> int:
        return self.features.shape[2]

    @property
    def horizon(self) -> float:
        return 1.0 / (1.0 - self.discount)

    # -- views ------------------------------------------------------------------------------
    @property
    def transitions(self) -> np.ndarray:
        """``P[S, A, S] = phi @ mu`` with rounding-level negatives clipped to 0."""
        return np.maximum(np.einsum("sad,dn->san", self.features, self.factors), 0.0)

    @property
    def rewards(self) -> np.ndarray:
        """``r[S, A] = phi @ theta_r``."""
        return self.features @ self.reward_params

    def flat_features(self) -> np.ndarray:
        """``phi`` as ``[S * A, d]`` rows in state-major order (row ``s * A + a``)."""
        return self.features.reshape(-1, self.dim)

    def to_tabular(self) -> TabularMDP:
        """The same MDP as a validated :class:`TabularMDP` (ground truth via the exact solvers)."""
        return TabularMDP(self.transitions, self.rewards, self.discount, self.initial, name=self.name)


# -------------------------------------------------------------------------------------------
# Constructors
# -------------------------------------------------------------------------------------------


def one_hot(mdp: TabularMDP) -> LinearMDP:
    """Tabular MDP as a linear MDP: ``phi(s, a) = e_{(s, a)}``, ``mu = P``, ``theta_r = r``."""
    S, A = mdp.num_states, mdp.num_actions
    phi = np.eye(S * A).reshape(S, A, S * A)
    mu = mdp.transitions.reshape(S * A, S)
    return LinearMDP(phi, mu, mdp.rewards.reshape(-1), mdp.discount, mdp.initial, name=f"onehot-{mdp.name}")


def low_rank_mixture(
    num_states: int,
    num_actions: int,
    dim: int,
    branching: int,
    discount: float = 0.9,
    seed: int = 0,
) -> LinearMDP:
    """A low-rank mixture ``P(. | s, a) = sum_i phi_i(s, a) nu_i``: a linear MDP with ``mu = nu``.

    ``nu_i`` are ``dim`` Garnet rows (``branching`` successors each, :func:`~envs.tabular.garnet`
    conventions); ``phi(s, a)`` is a Dirichlet(1) point of the simplex, except that the first
    ``dim`` pairs (state-major) are the anchors ``e_i`` so the features span R^d; ``theta_r`` is
    U(0, 1)^d, so rewards lie in [0, 1]. Ground truth is linear in ``phi``:
    ``Q^pi(s, a) = r + gamma P V^pi = phi(s, a)^T (theta_r + gamma nu V^pi)``.
    """
    num_states = check_count(num_states, "num_states")
    num_actions = check_count(num_actions, "num_actions")
    dim = check_count(dim, "dim")
    if num_states * num_actions < dim:
        raise ValueError(f"need 1 <= dim <= S * A = {num_states * num_actions}, got dim={dim}")
    seed = check_count(seed, "seed", minimum=0)
    rng = np.random.default_rng(seed)
    nu = garnet(num_states, dim, branching, discount, seed=seed).transitions[0]  # [dim, S]
    phi = rng.dirichlet(np.ones(dim), size=num_states * num_actions)
    phi[:dim] = np.eye(dim)
    theta = rng.random(dim)
    return LinearMDP(
        phi.reshape(num_states, num_actions, dim),
        nu,
        theta,
        discount,
        name=f"lowrank-{num_states}x{num_actions}-d{dim}",
    )


def kitamura_hard_mdp(
    discount: float = 0.9,
    dim: int = 4,
    num_actions: int = 30,
    delta: float = 0.01,
    seed: int = 0,
) -> LinearMDP:
    """The two-state hard linear MDP of Kitamura et al. (2023, arXiv 2305.13185, App. L).

    States ``s0`` (reward 1) and ``s1`` (absorbing, reward 0). Actions ``a ~ U[0, 1]^{d-2}``, one
    of which is designated ``beta``. ``phi(s0, a) = (1, 0, a)``, ``phi(s1, .) = e_2``,
    ``theta_r = e_1``; ``P(s0 | s0, a) = gamma + delta <a, beta>``. Valid rows need
    ``delta (d - 2) <= 1 - gamma`` (checked by :class:`LinearMDP`).
    """
    dim = check_count(dim, "dim", minimum=3)
    num_actions = check_count(num_actions, "num_actions")
    seed = check_count(seed, "seed", minimum=0)
    rng = np.random.default_rng(seed)
    actions = rng.random((num_actions, dim - 2))
    beta = actions[rng.integers(num_actions)]
    return two_state_linear_mdp(discount, actions, beta, delta, name=f"kitamura-hard-d{dim}")


def two_state_linear_mdp(discount: float, actions, beta, delta: float, name: str = "two-state") -> LinearMDP:
    """The two-state family behind :func:`kitamura_hard_mdp` and F1, for given actions and beta.

    Factors: ``mu_1 = gamma delta_s0 + (1 - gamma) delta_s1``, ``mu_2 = delta_s1``,
    ``mu_{2+i} = delta beta_i (delta_s0 - delta_s1)``; reward parameter ``e_1``.
    """
    gamma = check_discount(discount)
    delta = check_real(delta, "delta")
    if not math.isfinite(delta):
        raise ValueError(f"delta must be finite, got {delta}")
    actions = np.asarray(actions, dtype=np.float64)
    beta = np.asarray(beta, dtype=np.float64)
    if actions.ndim != 2 or beta.shape != (actions.shape[1],):
        raise ValueError(f"actions must be [A, m] and beta [m], got {actions.shape} and {beta.shape}")
    A, m = actions.shape
    d = m + 2
    phi = np.zeros((2, A, d))
    phi[0, :, 0] = 1.0
    phi[0, :, 2:] = actions
    phi[1, :, 1] = 1.0
    mu = np.zeros((d, 2))
    mu[0] = (gamma, 1.0 - gamma)
    mu[1] = (0.0, 1.0)
    mu[2:] = delta * beta[:, None] * np.array([1.0, -1.0])
    theta = np.zeros(d)
    theta[0] = 1.0
    return LinearMDP(phi, mu, theta, gamma, initial=np.array([1.0, 0.0]), name=name)


# -- F1-F3: instance families that do and do not separate unweighted from weighted LS ----------
#
# Common to all three: gamma = 1 - 1/H; the actions are the corners C of [0, 1]^2 and
# x_a = <a, beta_vec> with beta_vec = (1, 0.5); Delta (gap_delta) makes the best action at s0 beat
# the second best by 2 eps in value, so "eps-optimal" means "picks (1, 1) at s0".

CORNERS = np.array(list(itertools.product((0.0, 1.0), repeat=2)))  # the actions C of [0, 1]^2
BETA_VEC = np.array([1.0, 0.5])  # x_a = <a, beta_vec> in {0, 0.5, 1, 1.5}


def gap_delta(horizon: float, epsilon: float) -> float:
    """``Delta`` with ``V(x = 1.5) - V(x = 1) = 2 eps`` at ``s0``, where ``V(x) = 1 / (1 - gamma (gamma + Delta x))``.

    ``P(s0 | s0, a) = gamma + Delta x_a <= 1`` for ``x_a <= 1.5`` bounds ``Delta`` by
    ``(1 - gamma) / 1.5``, and the gap grows with ``Delta``, so bisection on that interval finds
    it. With it the best action at ``s0`` beats the second best by ``2 eps`` in value, so
    "eps-optimal" means "picks (1, 1) at s0".
    """
    horizon = check_real(horizon, "horizon")
    epsilon = check_real(epsilon, "epsilon")
    if not (horizon > 1 and math.isfinite(horizon)):
        raise ValueError(f"horizon must be finite and > 1, got {horizon}")
    if not 0 < epsilon < math.inf:
        raise ValueError(f"epsilon must be finite and > 0, got {epsilon}")
    gamma = 1.0 - 1.0 / horizon

    def excess(delta):
        return 1.0 / (1.0 - gamma * (gamma + 1.5 * delta)) - 1.0 / (1.0 - gamma * (gamma + delta)) - 2.0 * epsilon

    lo, hi = 0.0, (1.0 - gamma) / 1.5
    if excess(hi * (1 - 1e-12)) < 0:
        raise ValueError(
            f"epsilon={epsilon} is too large for H={horizon}: the largest valid Delta gives a value gap "
            f"below 2 eps (use a smaller epsilon or a longer horizon)"
        )
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if excess(mid) < 0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def family_f1(horizon: float, epsilon: float = 0.5) -> LinearMDP:
    """F1 (control, d = 4): the two-state hard MDP with actions C and ``beta = (1, 0.5)``.

    All next-state variances of ``V*`` are about ``H / 4`` (``s0`` leaves for the absorbing
    ``s1`` with probability about ``1 - gamma``, and ``V*(s0)`` is about ``1 / (1 - gamma^2) ~ H / 2``,
    so ``Var ~ (1 - gamma) (H / 2)^2``): below the ``+H`` floor of the regression weights
    ``1 / (Var + H)``, so weighting should change nothing.
    """
    delta = gap_delta(horizon, epsilon)  # validates horizon and epsilon
    horizon = float(horizon)
    gamma = 1.0 - 1.0 / horizon
    return two_state_linear_mdp(gamma, CORNERS, BETA_VEC, delta, name=f"F1-H{horizon:g}")


def _risky_sibling(horizon: float, epsilon: float, shared_block: bool) -> LinearMDP:
    delta = gap_delta(horizon, epsilon)  # validates horizon and epsilon
    horizon = float(horizon)
    gamma = 1.0 - 1.0 / horizon
    s0, s1, goal, s2 = range(4)
    A = len(CORNERS)
    d = 6 if shared_block else 8
    phi = np.zeros((4, A, d))
    phi[s0, :, 0] = 1.0
    phi[s0, :, 4:6] = CORNERS
    phi[s1, :, 1] = 1.0
    phi[goal, :, 2] = 1.0
    phi[s2, :, 3] = 1.0
    if shared_block:
        phi[s2, :, 4:6] = CORNERS
    else:
        phi[s2, :, 6:8] = CORNERS
    mu = np.zeros((d, 4))
    mu[0, s0], mu[0, s1] = gamma, 1.0 - gamma
    mu[1, s1] = 1.0
    mu[2, goal] = 1.0
    mu[3, goal], mu[3, s1] = 0.5, 0.5
    for i, b in enumerate(BETA_VEC):
        mu[4 + i, s0], mu[4 + i, s1] = delta * b, -delta * b
        if not shared_block:
            mu[6 + i] = mu[4 + i]
    theta = np.zeros(d)
    theta[0] = theta[2] = 1.0
    initial = np.array([1.0, 0.0, 0.0, 0.0])
    label = "F2" if shared_block else "F3"
    return LinearMDP(phi, mu, theta, gamma, initial, name=f"{label}-H{horizon:g}")


def family_f2(horizon: float, epsilon: float = 0.5) -> LinearMDP:
    """F2 (the gap, d = 6): a risky sibling ``s2`` shares the action block with ``s0``.

    States ``s0`` (reward 1), ``s1`` (absorbing, 0), ``G`` (absorbing, reward 1), ``s2``
    (reward 0, actions C). ``phi(s0, a) = (1, 0, 0, 0, a)``, ``phi(s1) = e_2``, ``phi(G) = e_3``,
    ``phi(s2, b) = (0, 0, 0, 1, b)``; ``mu_1 = gamma delta_s0 + (1 - gamma) delta_s1``,
    ``mu_2 = delta_s1``, ``mu_3 = delta_G``, ``mu_4 = (delta_G + delta_s1) / 2``,
    ``mu_{4+i} = Delta beta_i (delta_s0 - delta_s1)``; ``theta_r = (1, 0, 1, 0, 0, 0)``. ``s2``
    moves to ``G`` with probability 1/2 (next-state variance about ``H^2 / 4`` against about
    ``H / 4`` at ``s0``); ``s0`` never reaches ``s2``, but ``s2``'s points enter the design and
    share the last two coordinates with ``s0``'s actions, so unweighted least squares leaks their
    variance into ``s0``'s action gap (the mixing of variances that costs unweighted LS-MDVI a
    factor ``H`` in Kitamura et al. 2023).
    """
    return _risky_sibling(horizon, epsilon, shared_block=True)


def family_f3(horizon: float, epsilon: float = 0.5) -> LinearMDP:
    """F3 (ablation, d = 8): the MDP of F2 with ``s2``'s actions in their own block.

    ``phi(s2, b) = (0, 0, 0, 1, 0, 0, b)`` and ``mu_7, mu_8`` copies of ``mu_5, mu_6``: same
    ``P``, ``r`` and ``Q*`` as F2, but nothing leaks, so every method should scale like ``H^3``.
    """
    return _risky_sibling(horizon, epsilon, shared_block=False)


def spread_actions(num_action_dims: int) -> tuple[np.ndarray, np.ndarray]:
    """The action set of :func:`family_f4` in ``R^m`` and its direction ``beta``.

    Actions ``{0, e_1, ..., e_m, 1_m}`` (``m + 2`` of them) and
    ``beta = (1, 0.5 / (m - 1), ..., 0.5 / (m - 1))``, so ``x_a = <a, beta>`` is 1.5 for the
    all-ones action, 1 for ``e_1``, ``0.5 / (m - 1)`` for ``e_2..e_m`` and 0 for ``0``. For
    ``m = 2`` these are the corners ``C`` and ``beta = (1, 0.5)`` of F1-F3 (in another order).
    """
    m = check_count(num_action_dims, "num_action_dims", minimum=2)
    actions = np.vstack([np.zeros(m), np.eye(m), np.ones(m)])
    beta = np.full(m, 0.5 / (m - 1))
    beta[0] = 1.0
    return actions, beta


def family_f4(horizon: float, dim: int = 6, epsilon: float = 0.5, rotation_seed: int | None = None) -> LinearMDP:
    """F4 (the dimension family, ``d >= 6``): F2 with an ``m = d - 4``-dimensional action block.

    States ``s0`` (reward 1), ``s1`` (absorbing, 0), ``G`` (absorbing, reward 1) and the risky
    sibling ``s2`` (reward 0); both ``s0`` and ``s2`` take the ``m + 2`` actions of
    :func:`spread_actions` (``s1`` and ``G`` ignore the action). ``phi(s0, a) = (1, 0, 0, 0, a)``,
    ``phi(s1) = e_2``, ``phi(G) = e_3``, ``phi(s2, b) = (0, 0, 0, 1, b)``; ``mu`` as in F2 with
    ``mu_{4+i} = Delta beta_i (delta_s0 - delta_s1)``, ``i = 1..m``; ``theta_r = e_1 + e_3``;
    ``Delta`` from :func:`gap_delta`. At ``d = 6`` this is F2, pair for pair up to the order
    of the actions. With ``p_a = gamma + Delta x_a``, ``q_b = Delta x_b``, ``H = 1 / (1 - gamma)``
    and ``V0 = 1 / (1 - gamma (gamma + 1.5 Delta))``, exactly:

        V*(s0) = V0,  V*(s1) = 0,  V*(G) = H,  V*(s2) = gamma (H / 2 + 1.5 Delta V0),
        Var_P V*(s0, a) = p_a (1 - p_a) V0^2                          (order H: 0.59 H at H = 8, -> H / 4),
        Var_P V*(s2, b) = H^2 / 4 + q_b (1 - q_b) V0^2 - q_b H V0      (about H^2 / 4),
        Var_P V*(s1, .) = Var_P V*(G, .) = 0,

    for every ``d``: the same variance contrast as F2, and ``s2``'s high-variance points share the
    whole action block with ``s0``'s, so the weighting gap of F2 survives.

    What it isolates. Success is one event: at ``s0`` the all-ones action (``x = 1.5``) beats its
    one close competitor ``e_1`` (``x = 1``) by ``2 eps`` (the others trail by more), and the
    contrast ``phi(s0, 1_m) - phi(s0, e_1) = (0, 0, 0, 0, 0, 1, ..., 1)`` lies across the action
    block that all ``2 (m + 2)`` action points of ``s0`` and ``s2`` share, so one regression
    couples every coordinate. The d-factors of the bounds (Kitamura et al. 2023:
    ``d^2 H^3 eps^-2`` for VWLS-MDVI, one ``H`` more for LS-MDVI) are (i) the leverage bound
    ``g = d`` of the G-optimal design (Kiefer-Wolfowitz) and (ii) the number of design points,
    ``|C| ~ d``, each sampled ``M`` times. On F4 the G-optimal design has ``2 d - 4`` support
    points (``d >= 8``) and the decisive contrast has leverage about ``2 d`` (``13.3, 21.6, 45.8,
    93.9`` at ``d = 8, 12, 24, 48``): both factors grow with ``d`` at a single decision, so the
    F4 sweep's ``N*(d)`` measures them without a union over decisions. :func:`block_copies` of
    F2 (``d = 6 k``) has the same two factors (support ``6 k``, contrast leverage ``6 k``) but
    ``k`` independent decisions in orthogonal blocks, all of which must succeed: a union over
    ``k`` events (a ``log k`` more samples each), which the bounds' ``d`` does not contain and
    which inflates the slope of ``log N*`` on ``log d`` over a finite range.

    ``rotation_seed``: if given, ``phi -> R phi`` and ``mu -> R mu`` for a seeded random orthogonal
    ``R``: every feature vector then spreads over all ``d`` coordinates while ``P = phi^T mu`` and
    ``r`` are unchanged up to rounding; LS designs and fits are invariant under such maps, so
    N* should not move (a check of that invariance).
    """
    delta = gap_delta(horizon, epsilon)  # validates horizon and epsilon
    dim = check_count(dim, "dim", minimum=6)
    horizon = float(horizon)
    gamma = 1.0 - 1.0 / horizon
    actions, beta = spread_actions(dim - 4)
    s0, s1, goal, s2 = range(4)
    A = actions.shape[0]
    phi = np.zeros((4, A, dim))
    phi[s0, :, 0] = 1.0
    phi[s0, :, 4:] = actions
    phi[s1, :, 1] = 1.0
    phi[goal, :, 2] = 1.0
    phi[s2, :, 3] = 1.0
    phi[s2, :, 4:] = actions
    mu = np.zeros((dim, 4))
    mu[0, s0], mu[0, s1] = gamma, 1.0 - gamma
    mu[1, s1] = 1.0
    mu[2, goal] = 1.0
    mu[3, goal], mu[3, s1] = 0.5, 0.5
    mu[4:, s0], mu[4:, s1] = delta * beta, -delta * beta
    theta = np.zeros(dim)
    theta[0] = theta[2] = 1.0
    name = f"F4-d{dim}-H{horizon:g}"
    if rotation_seed is not None:
        rotation_seed = check_count(rotation_seed, "rotation_seed", minimum=0)
        gaussian = np.random.default_rng(rotation_seed).standard_normal((dim, dim))
        q, r = np.linalg.qr(gaussian)
        rotation = q * np.sign(np.diag(r))  # Haar-distributed orthogonal matrix
        phi, mu, theta = phi @ rotation.T, rotation @ mu, rotation @ theta
        name += f"-rot{rotation_seed}"
    return LinearMDP(phi, mu, theta, gamma, np.array([1.0, 0.0, 0.0, 0.0]), name=name)


F4_BASE_DIM = 6  # F4's dimension outside a dimension sweep: there it is F2 up to the order of the actions

FAMILIES = {"F1": family_f1, "F2": family_f2, "F3": family_f3, "F4": family_f4}
"""The instance families by name: ``FAMILIES[name](horizon, epsilon=eps)`` builds one at its base
dimension (F1: 4, F2: 6, F3: 8, F4: :data:`F4_BASE_DIM`); F4 alone also takes ``dim=d``
(:data:`DIMENSION_FAMILIES`)."""

DIMENSION_FAMILIES = ("F4",)
"""Families whose feature dimension is a parameter (``dim=d``) of one decision problem."""


def block_copies(mdp: LinearMDP, copies: int) -> LinearMDP:
    """``copies`` independent copies of ``mdp`` side by side: ``S -> k S``, ``d -> k d``.

    Copy ``c`` has its own states and its own block of feature coordinates; the initial
    distribution is spread evenly over the copies. Used to sweep the dimension at a fixed
    per-copy difficulty.
    """
    copies = check_count(copies, "copies")
    S, A, d = mdp.features.shape
    phi = np.zeros((copies * S, A, copies * d))
    mu = np.zeros((copies * d, copies * S))
    theta = np.tile(mdp.reward_params, copies)
    for c in range(copies):
        phi[c * S : (c + 1) * S, :, c * d : (c + 1) * d] = mdp.features
        mu[c * d : (c + 1) * d, c * S : (c + 1) * S] = mdp.factors
    initial = None if mdp.initial is None else np.tile(mdp.initial, copies) / copies
    return LinearMDP(phi, mu, theta, mdp.discount, initial, name=f"{mdp.name}x{copies}")
