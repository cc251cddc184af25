"""The regularized core shared by tabular MDVI, M-DQN and the token-level IRL loss.

Notation (Vieillard et al. 2020 "Leverage the Average"; Kozuno et al. 2022, arXiv 2205.14211;
Kitamura et al. 2023, arXiv 2305.13185): ``tau`` weighs KL(pi || pi_{k-1}) and ``kappa`` weighs
the entropy, giving

    pi_k ∝ pi_{k-1}^alpha exp(beta q_k),   alpha = tau / (tau + kappa),  beta = 1 / (tau + kappa).

M-DQN (Vieillard et al. 2020, "Munchausen RL") writes the same step with a temperature
``tau_M = tau + kappa = 1 / beta`` and a Munchausen scale ``alpha_M = alpha``.
:class:`Regularization` is the one place where these parametrisations are converted.

All array functions are pure, jittable, differentiable and batched over leading axes; the
action axis is last.
"""

from __future__ import annotations

import dataclasses
import math

import chex
import jax
import jax.numpy as jnp

from mdvi.divergences import KL, Divergence, get_divergence

Array = jax.Array


# ---------------------------------------------------------------------------------------------
# Parametrisation
# ---------------------------------------------------------------------------------------------


def _check_real(name: str, value: float) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number, got {value!r}") from None
    if math.isnan(value):
        raise ValueError(f"{name} must not be NaN")
    return value


def kl_entropy_to_munchausen(kl_weight, entropy_weight):
    """``(tau, kappa) -> (tau_M, alpha_M) = (tau + kappa, tau / (tau + kappa))``.

    The arithmetic behind :class:`Regularization`, without validation so it also runs on
    traced arrays (hyperparameter sweeps vmapped over ``kl_weight``). Needs ``tau + kappa > 0``.
    """
    temperature = kl_weight + entropy_weight
    return temperature, kl_weight / temperature


@dataclasses.dataclass(frozen=True)
class Regularization:
    """KL-entropy regularization of the greedy step, stored as ``(alpha, beta)``.

    ``alpha`` in [0, 1] is the weight of the previous policy (the discount of the running sum
    ``s_k = q_k + alpha s_{k-1}``); ``beta`` in (0, inf] is the inverse temperature.
    ``beta = inf`` is the unregularized limit of the greedy step (hard max); with
    ``alpha = 0`` it is plain value iteration, with ``alpha = gamma`` it is the beta -> inf
    MDVI analysed by Kozuno et al. (2022).

    Build it with one of the ``from_*`` constructors; each validates its input.
    """

    alpha: float
    beta: float

    def __post_init__(self):
        alpha = _check_real("alpha", self.alpha)
        beta = _check_real("beta", self.beta)
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
        if not beta > 0.0:
            raise ValueError(f"beta (inverse temperature) must be > 0 (inf allowed), got {beta}")
        object.__setattr__(self, "alpha", alpha)
        object.__setattr__(self, "beta", beta)

    # -- constructors -----------------------------------------------------------------------
    @classmethod
    def from_alpha_beta(cls, alpha: float, beta: float) -> Regularization:
        return cls(alpha=alpha, beta=beta)

    @classmethod
    def from_kl_entropy(cls, kl_weight: float, entropy_weight: float) -> Regularization:
        """``tau`` (KL weight) and ``kappa`` (entropy weight), both >= 0 and finite.

        ``tau = kappa = 0`` is unregularized value iteration: ``alpha = 0, beta = inf``.
        """
        tau = _check_real("kl_weight (tau)", kl_weight)
        kappa = _check_real("entropy_weight (kappa)", entropy_weight)
        for name, value in (("kl_weight (tau)", tau), ("entropy_weight (kappa)", kappa)):
            if not (value >= 0.0 and math.isfinite(value)):
                raise ValueError(f"{name} must be finite and >= 0, got {value}")
        if tau + kappa == 0.0:
            return cls(alpha=0.0, beta=math.inf)
        temperature, alpha = kl_entropy_to_munchausen(tau, kappa)
        return cls(alpha=alpha, beta=1.0 / temperature)

    @classmethod
    def from_munchausen(cls, temperature: float, munchausen_alpha: float) -> Regularization:
        """M-DQN's ``tau_M`` (softmax temperature, >= 0) and Munchausen scale ``alpha_M``."""
        temperature = _check_real("temperature", temperature)
        if not (temperature >= 0.0 and math.isfinite(temperature)):
            raise ValueError(f"temperature must be finite and >= 0, got {temperature}")
        beta = math.inf if temperature == 0.0 else 1.0 / temperature
        return cls(alpha=munchausen_alpha, beta=beta)

    # -- derived views ----------------------------------------------------------------------
    @property
    def temperature(self) -> float:
        """``1 / beta = tau + kappa`` (M-DQN's ``tau_M``); 0 for the hard max."""
        return 0.0 if math.isinf(self.beta) else 1.0 / self.beta

    @property
    def kl_weight(self) -> float:
        """``tau = alpha / beta``."""
        return self.alpha * self.temperature

    @property
    def entropy_weight(self) -> float:
        """``kappa = (1 - alpha) / beta``."""
        return (1.0 - self.alpha) * self.temperature

    @property
    def munchausen_alpha(self) -> float:
        return self.alpha


# ---------------------------------------------------------------------------------------------
# Soft value and greedy step
# ---------------------------------------------------------------------------------------------


def _with_action_axis(q) -> Array:
    q = jnp.asarray(q)
    if q.ndim < 1:
        raise ValueError(f"q needs an action axis (rank >= 1), got shape {q.shape}")
    if not jnp.issubdtype(q.dtype, jnp.floating):
        q = q.astype(jnp.result_type(float))
    return q


def _log_reference(q: Array, ref, log_ref) -> Array:
    if ref is not None and log_ref is not None:
        raise ValueError("pass either ref or log_ref, not both")
    if log_ref is None:
        if ref is None:
            return jnp.zeros_like(q)
        ref = jnp.asarray(ref, dtype=q.dtype)
        chex.assert_equal_shape([q, ref])
        return jnp.where(ref > 0, jnp.log(jnp.where(ref > 0, ref, 1.0)), -jnp.inf)
    log_ref = jnp.asarray(log_ref, dtype=q.dtype)
    chex.assert_equal_shape([q, log_ref])
    return log_ref


def soft_value(
    q: Array,
    temperature,
    ref: Array | None = None,
    *,
    log_ref: Array | None = None,
    divergence: str | Divergence = KL,
) -> Array:
    """Soft value ``tau * log sum_a ref(a) exp(q(a) / tau)`` (the conjugate of the KL step).

    Equals ``max_p <p, q> - tau KL(p || ref)``. With ``ref`` a probability vector it lies in
    ``[max q + tau log min ref, max q]`` (max and min over the support of ``ref``); with no
    ``ref`` (the counting measure) it is ``tau * logsumexp(q / tau)`` in
    ``[max q, max q + tau log A]``. It is exact for large ``q``, handles zeros in ``ref``, and
    ``tau = 0`` gives the max over the support of ``ref`` (its ``tau -> 0`` limit).

    Args:
      q: action values ``[..., A]``.
      temperature: ``tau >= 0``, a scalar or an array broadcasting against ``q.shape[:-1]``.
      ref: optional non-negative reference measure ``[..., A]``.
      log_ref: the same reference in log space (``-inf`` outside its support).
      divergence: the regularizer (KL by default; see :mod:`mdvi.divergences`).

    Returns:
      ``[...]`` soft values.
    """
    q = _with_action_axis(q)
    return get_divergence(divergence).conjugate(q, temperature, _log_reference(q, ref, log_ref))


def greedy_log_policy(
    q: Array,
    temperature,
    ref: Array | None = None,
    *,
    log_ref: Array | None = None,
    divergence: str | Divergence = KL,
) -> Array:
    """Log of the regularized greedy policy ``argmax_p <p, q> - tau D(p || ref)``.

    For KL this is ``log softmax(q / tau + log ref)``; ``tau = 0`` gives the uniform policy
    over the maximisers of ``q`` inside the support of ``ref``.
    """
    q = _with_action_axis(q)
    divergence = get_divergence(divergence)
    return divergence.greedy_log_policy(q, temperature, _log_reference(q, ref, log_ref))


def mdvi_greedy_step(
    q: Array,
    log_prev_policy: Array,
    regularization: Regularization,
    divergence: str | Divergence = KL,
) -> Array:
    """MDVI policy step ``pi_k ∝ pi_{k-1}^alpha exp(beta q_k)`` in log space.

    Solves ``argmax_pi <pi, q_k> - tau KL(pi || pi_{k-1}) + kappa H(pi)`` (Vieillard et al.
    2020, Eq. 2; Kozuno et al. 2022, Eq. 1), which is the greedy step with temperature
    ``1 / beta`` and reference measure ``pi_{k-1}^alpha``. ``alpha = 0`` ignores the previous
    policy entirely (``pi^0 = 1``, even where ``pi_{k-1} = 0``).
    """
    chex.assert_equal_shape([q, log_prev_policy])
    alpha = regularization.alpha
    log_ref = jnp.zeros_like(q) if alpha == 0.0 else alpha * log_prev_policy
    return greedy_log_policy(
        q, regularization.temperature, log_ref=log_ref, divergence=divergence
    )


def policy_from_sum(s: Array, regularization: Regularization) -> Array:
    """The same policy from the alpha-discounted sum ``s_k = q_k + alpha s_{k-1}``.

    Unrolling the greedy step from a uniform ``pi_0`` gives ``pi_k = softmax(beta s_k)``
    (Vieillard et al. 2020, Thm 1), i.e. the greedy step with no reference.
    """
    return greedy_log_policy(s, regularization.temperature)


# ---------------------------------------------------------------------------------------------
# Information quantities
# ---------------------------------------------------------------------------------------------


def entropy(log_policy: Array) -> Array:
    """Shannon entropy ``-sum_a pi(a) log pi(a)`` (zero-probability actions contribute 0)."""
    p = jnp.exp(log_policy)
    safe = jnp.where(p > 0, log_policy, 0.0)
    return -jnp.sum(p * safe, axis=-1)


def kl_divergence(log_p: Array, log_q: Array) -> Array:
    """``KL(p || q) = sum_a p(a) (log p(a) - log q(a))``; ``+inf`` if ``p`` leaves ``q``'s support."""
    chex.assert_equal_shape([log_p, log_q])
    return KL.divergence(log_p, log_q)


# ---------------------------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------------------------


def scaled_log_policy(q: Array, temperature) -> Array:
    """``tau * log pi(a)`` for ``pi = softmax(q / tau)``, computed as ``q - soft_value(q, tau)``.

    This form stays finite at ``tau = 0`` (where it is ``q - max q <= 0``).
    """
    return q - jnp.expand_dims(soft_value(q, temperature), -1)


def munchausen_target(
    q_target_tm1: Array,
    a_tm1: Array,
    r_t: Array,
    discount_t: Array,
    q_target_t: Array,
    temperature,
    munchausen_alpha,
    log_clip_min: float = -1.0,
) -> Array:
    """Munchausen-DQN regression target for one transition (Vieillard et al. 2020b, Eq. 4).

        y = r_t + alpha_M * clip(tau log pi(a_tm1 | s_tm1), l0, 0)
                + discount_t * sum_a' pi(a'|s_t) (q(s_t, a') - tau log pi(a'|s_t)),

    with ``pi = softmax(q_target / tau)``. The bootstrap term is the soft value of
    ``q_target_t``; with ``tau = alpha_M = 0`` the target is the Q-learning target.

    Args:
      q_target_tm1: target-network values at ``s_tm1``, shape ``[A]``.
      a_tm1: the action taken at ``s_tm1`` (integer scalar).
      r_t: reward; discount_t: ``gamma * (1 - terminated)``.
      q_target_t: target-network values at ``s_t``, shape ``[A]``.
      temperature: ``tau_M >= 0``; munchausen_alpha: ``alpha_M`` in [0, 1].
      log_clip_min: ``l0 < 0``, the lower clip of the scaled log-policy bonus.
    """
    chex.assert_rank([q_target_tm1, a_tm1, r_t, discount_t, q_target_t], [1, 0, 0, 0, 1])
    bonus_log_pi = scaled_log_policy(q_target_tm1, temperature)[a_tm1]
    bonus = munchausen_alpha * jnp.clip(bonus_log_pi, log_clip_min, 0.0)
    return r_t + bonus + discount_t * soft_value(q_target_t, temperature)


def soft_td_residual(q_taken: Array, next_value: Array, discount) -> Array:
    """Soft temporal-difference residual ``q(s_t, a_t) - gamma V(s_{t+1})``.

    In inverse soft-Q learning (Garg et al. 2021; Wulfmeier et al. 2024, Eq. 14) this residual
    is the implicit reward the learned Q-function assigns to the transition. Pass
    ``next_value = 0`` (or ``discount = 0``) after a terminal state.
    """
    return q_taken - discount * next_value
