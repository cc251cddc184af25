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

import jax
import jax.numpy as jnp
import numpy as np

from mdvi.divergences import KL, Divergence, get_divergence

Array = jax.Array


# ---------------------------------------------------------------------------------------------
# Parametrisation
# ---------------------------------------------------------------------------------------------


def _is_traced(value) -> bool:
    return isinstance(value, jax.core.Tracer)


def _concrete(name: str, value, valid, requirement: str):
    """Validate a concrete hyperparameter (scalar or array); tracers pass through unchecked.

    A scalar comes back as a Python float (so it prints and serialises as one), an array as
    a JAX array. ``valid(array) -> bool array`` states the range, ``requirement`` says it.
    """
    if _is_traced(value):
        return value
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number, got {value!r}") from None
    if np.any(np.isnan(array)):
        raise ValueError(f"{name} must not be NaN")
    if not np.all(valid(array)):
        shown = float(array) if array.ndim == 0 else array
        raise ValueError(f"{name} must {requirement}, got {shown}")
    return float(array) if array.ndim == 0 else jnp.asarray(value)


def _nonnegative_finite(name: str, value):
    return _concrete(name, value, lambda a: (a >= 0) & np.isfinite(a), "be finite and >= 0")


def _python(*values) -> bool:
    return all(isinstance(v, float) for v in values)


def kl_entropy_to_munchausen(kl_weight, entropy_weight):
    """``(tau, kappa) -> (tau_M, alpha_M) = (tau + kappa, tau / (tau + kappa))``.

    The arithmetic behind :class:`Regularization`, without validation so it also runs on
    traced arrays (hyperparameter sweeps vmapped over ``kl_weight``). Needs ``tau + kappa > 0``.
    """
    temperature = kl_weight + entropy_weight
    return temperature, kl_weight / temperature


@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True, eq=False)
class Regularization:
    """KL-entropy regularization of the greedy step, stored as ``(alpha, beta)``.

    ``alpha`` in [0, 1] is the weight of the previous policy (the discount of the running sum
    ``s_k = q_k + alpha s_{k-1}``); ``beta`` in (0, inf] is the inverse temperature.
    ``beta = inf`` is the unregularized limit of the greedy step (hard max); with
    ``alpha = 0`` it is plain value iteration, with ``alpha = gamma`` it is the beta -> inf
    MDVI analysed by Kozuno et al. (2022).

    A pytree with ``alpha`` and ``beta`` as leaves: a jitted solver takes it as an ordinary
    argument and ``vmap`` sweeps it, so a grid of tau, kappa or beta runs as one compiled
    program. Concrete values are validated (scalars kept as Python floats); traced values
    (inside ``jit``/``vmap``) pass unchecked. Build it with one of the ``from_*`` constructors.
    """

    alpha: float | Array
    beta: float | Array

    def __post_init__(self):
        alpha = _concrete("alpha", self.alpha, lambda a: (0.0 <= a) & (a <= 1.0), "lie in [0, 1]")
        beta = _concrete("beta", self.beta, lambda a: a > 0.0, "(inverse temperature) be > 0 (inf allowed)")
        object.__setattr__(self, "alpha", alpha)
        object.__setattr__(self, "beta", beta)

    # -- pytree -------------------------------------------------------------------------------
    def tree_flatten(self):
        return (self.alpha, self.beta), None

    @classmethod
    def tree_unflatten(cls, _, leaves):
        regularization = object.__new__(cls)  # leaves may be tracers or placeholders: no checks
        object.__setattr__(regularization, "alpha", leaves[0])
        object.__setattr__(regularization, "beta", leaves[1])
        return regularization

    # -- constructors -----------------------------------------------------------------------
    @classmethod
    def from_alpha_beta(cls, alpha, beta) -> Regularization:
        return cls(alpha=alpha, beta=beta)

    @classmethod
    def from_kl_entropy(cls, kl_weight, entropy_weight) -> Regularization:
        """``tau`` (KL weight) and ``kappa`` (entropy weight), both >= 0 and finite.

        ``tau = kappa = 0`` is unregularized value iteration: ``alpha = 0, beta = inf``.
        """
        tau = _nonnegative_finite("kl_weight (tau)", kl_weight)
        kappa = _nonnegative_finite("entropy_weight (kappa)", entropy_weight)
        if _python(tau, kappa):
            if tau + kappa == 0.0:
                return cls(alpha=0.0, beta=math.inf)
            temperature, alpha = kl_entropy_to_munchausen(tau, kappa)
            return cls(alpha=alpha, beta=1.0 / temperature)
        temperature = jnp.asarray(tau + kappa)
        positive = temperature > 0
        safe = jnp.where(positive, temperature, 1.0)
        alpha = jnp.where(positive, tau / safe, 0.0)
        return cls(alpha=alpha, beta=jnp.where(positive, 1.0 / safe, jnp.inf))

    @classmethod
    def from_munchausen(cls, temperature, munchausen_alpha) -> Regularization:
        """M-DQN's ``tau_M`` (softmax temperature, >= 0) and Munchausen scale ``alpha_M``."""
        temperature = _nonnegative_finite("temperature", temperature)
        if _python(temperature):
            beta = math.inf if temperature == 0.0 else 1.0 / temperature
        else:
            positive = temperature > 0
            beta = jnp.where(positive, 1.0 / jnp.where(positive, temperature, 1.0), jnp.inf)
        return cls(alpha=munchausen_alpha, beta=beta)

    # -- derived views ----------------------------------------------------------------------
    @property
    def temperature(self):
        """``1 / beta = tau + kappa`` (M-DQN's ``tau_M``); 0 for the hard max."""
        if _python(self.beta):
            return 0.0 if math.isinf(self.beta) else 1.0 / self.beta
        return 1.0 / jnp.asarray(self.beta)  # 1 / inf = 0

    @property
    def kl_weight(self):
        """``tau = alpha / beta``."""
        return self.alpha * self.temperature

    @property
    def entropy_weight(self):
        """``kappa = (1 - alpha) / beta``."""
        return (1.0 - self.alpha) * self.temperature

    @property
    def munchausen_alpha(self):
        return self.alpha


def check_regularization(regularization) -> Regularization:
    """The public-boundary check of a solver's ``regularization`` argument."""
    if not isinstance(regularization, Regularization):
        raise ValueError(
            "regularization must be a Regularization (e.g. Regularization.from_kl_entropy(tau, kappa)), "
            f"got {regularization!r}"
        )
    return regularization


def check_temperature(temperature):
    """A concrete ``temperature`` must be >= 0 (``inf`` allowed) and not NaN; traced ones pass."""
    if not _is_traced(temperature):
        _concrete("temperature", temperature, lambda a: a >= 0.0, "be >= 0 (inf allowed)")
    return temperature


# ---------------------------------------------------------------------------------------------
# Soft value and greedy step
# ---------------------------------------------------------------------------------------------


def _same_shape(name: str, value: Array, q: Array) -> None:
    if value.shape != q.shape:
        raise ValueError(f"{name} must have the shape of q {q.shape}, got {value.shape}")


def _prepare(q, temperature, ref, log_ref, divergence) -> tuple[Array, Array, Divergence]:
    """Public-boundary checks shared by the soft value and the greedy policy.

    Returns ``q`` (floating, with an action axis), the reference in log space (``-inf`` off
    its support; 0, the counting measure, when none is given) and the divergence.
    """
    q = jnp.asarray(q)
    if q.ndim < 1:
        raise ValueError(f"q needs an action axis (rank >= 1), got shape {q.shape}")
    if not jnp.issubdtype(q.dtype, jnp.floating):
        q = q.astype(jnp.result_type(float))
    check_temperature(temperature)
    if ref is not None and log_ref is not None:
        raise ValueError("pass either ref or log_ref, not both")
    if log_ref is not None:
        log_ref = jnp.asarray(log_ref, dtype=q.dtype)
        _same_shape("log_ref", log_ref, q)
    elif ref is not None:
        ref = jnp.asarray(ref, dtype=q.dtype)
        _same_shape("ref", ref, q)
        log_ref = jnp.where(ref > 0, jnp.log(jnp.where(ref > 0, ref, 1.0)), -jnp.inf)
    else:
        log_ref = jnp.zeros_like(q)
    return q, log_ref, get_divergence(divergence)


def soft_value(
    q: Array,
    temperature,
    ref: Array | None = None,
    *,
    log_ref: Array | None = None,
    divergence: str | Divergence = KL,
) -> Array:
    """Soft value ``tau * log sum_a ref(a) exp(q(a) / tau)`` (the conjugate of the KL step).

    Equals ``max_p <p, q> - tau KL(p || ref)`` (Vieillard et al. 2020, "Leverage the Average",
    Eq. 2). With ``ref`` a probability vector it lies in ``[max q + tau log min ref, max q]``
    (max and min over the support of ``ref``) and tends to the ``ref``-mean of ``q`` as
    ``tau -> inf``; with no ``ref`` (the counting measure) it is ``tau * logsumexp(q / tau)``
    in ``[max q, max q + tau log A]``. Accurate for every ``tau`` in ``[0, inf]`` (see
    :meth:`mdvi.divergences.KLDivergence.conjugate`), exact for large ``q``; handles zeros in
    ``ref`` and infinite ``q``; ``tau = 0`` gives the max over the support of ``ref``.

    Args:
      q: action values ``[..., A]``.
      temperature: ``tau >= 0`` (``inf`` allowed), a scalar or an array broadcasting against
        ``q.shape[:-1]``; a concrete negative or NaN value raises ``ValueError``.
      ref: optional non-negative reference measure ``[..., A]``.
      log_ref: the same reference in log space (``-inf`` outside its support).
      divergence: the regularizer (KL by default; see :mod:`mdvi.divergences`).

    Returns:
      ``[...]`` soft values.
    """
    q, log_ref, divergence = _prepare(q, temperature, ref, log_ref, divergence)
    return divergence.conjugate(q, temperature, log_ref)


def greedy_log_policy(
    q: Array, temperature, ref: Array | None = None, *, log_ref: Array | None = None, divergence: str | Divergence = KL
) -> Array:
    """Log of the regularized greedy policy ``argmax_p <p, q> - tau D(p || ref)``.

    For KL this is ``log softmax(q / tau + log ref)``, the gradient of :func:`soft_value`;
    ``tau = 0`` gives the uniform policy over the maximisers of ``q`` inside the support of
    ``ref``. Arguments as in :func:`soft_value`.
    """
    q, log_ref, divergence = _prepare(q, temperature, ref, log_ref, divergence)
    return divergence.greedy_log_policy(q, temperature, log_ref)


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
    policy entirely (``pi^0 = 1``, even where ``pi_{k-1} = 0``); that case is a ``where``, not
    a Python branch, so ``alpha`` may be traced (a vmapped sweep).
    """
    log_ref = _mdvi_reference(q, log_prev_policy, regularization)
    return greedy_log_policy(q, regularization.temperature, log_ref=log_ref, divergence=divergence)


def mdvi_soft_value(
    q: Array,
    log_prev_policy: Array,
    regularization: Regularization,
    divergence: str | Divergence = KL,
) -> Array:
    """The optimal value of :func:`mdvi_greedy_step`'s problem (its conjugate), ``[...]``.

    ``v_k = max_pi <pi, q_k> - (1 / beta) D(pi || pi_{k-1}^alpha)``: MDVI's regularized value
    in the policy form, for any divergence. For KL it equals the sum form's ``w_k - alpha
    w_{k-1}`` (Vieillard et al. 2020, Thm 1): ``(1/beta) log sum_a pi_{k-1}^alpha exp(beta q_k)``
    with ``log pi_{k-1} = beta (s_{k-1} - w_{k-1})``.
    """
    log_ref = _mdvi_reference(q, log_prev_policy, regularization)
    return soft_value(q, regularization.temperature, log_ref=log_ref, divergence=divergence)


def _mdvi_reference(q, log_prev_policy, regularization: Regularization) -> Array:
    """``alpha log pi_{k-1}``, the log reference measure of the MDVI step (0 when ``alpha = 0``)."""
    check_regularization(regularization)
    log_prev_policy = jnp.asarray(log_prev_policy)
    _same_shape("log_prev_policy", log_prev_policy, jnp.asarray(q))
    alpha = regularization.alpha
    return jnp.where(alpha == 0.0, 0.0, alpha * log_prev_policy)


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
    log_p, log_q = jnp.asarray(log_p), jnp.asarray(log_q)
    _same_shape("log_q", log_q, log_p)
    return KL.divergence(log_p, log_q)


# ---------------------------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------------------------


def scaled_log_policy(q: Array, temperature, divergence: str | Divergence = KL) -> Array:
    """``tau * log pi(a)`` for ``pi = softmax(q / tau)``, computed as ``q - soft_value(q, tau)``.

    This form stays finite at ``tau = 0`` (where it is ``q - max q <= 0``).

    For an f-divergence ``D_f`` (:mod:`mdvi.f_divergences`) with the unit reference it is the
    generalised scaled log-policy ``tau (f'(pi(a)) - f'(1))``, ``pi`` the f-softargmax of
    ``q / tau``: ``f' = log`` for KL, and for the alpha family the Tsallis ``q``-logarithm
    ``(pi^(alpha-1) - 1) / (alpha - 1)`` used by Zhu et al. (2023, "Generalized Munchausen RL
    using Tsallis KL", arXiv 2301.11476). It is ``<= 0`` and may be ``-inf`` (reverse KL at
    ``pi = 0``); the Munchausen bonus clips it. ``tau = 0`` gives 0 for f-divergences.
    """
    divergence = get_divergence(divergence)
    if divergence is KL:
        return q - jnp.expand_dims(soft_value(q, temperature), -1)
    if not hasattr(divergence, "f_prime_of_log"):
        raise ValueError(f"divergence {divergence.name!r} has no generator f' for the scaled log-policy")
    log_pi = greedy_log_policy(q, temperature, divergence=divergence)
    t = jnp.expand_dims(jnp.asarray(temperature, q.dtype), -1)
    scaled = t * (divergence.f_prime_of_log(log_pi) - divergence.f_prime_one)
    return jnp.where(t > 0, scaled, 0.0)


def munchausen_target(
    q_target_tm1: Array,
    a_tm1: Array,
    r_t: Array,
    discount_t: Array,
    q_target_t: Array,
    temperature,
    munchausen_alpha,
    log_clip_min: float = -1.0,
    divergence: str | Divergence = KL,
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
      divergence: the regularizer (KL by default). For an f-divergence the policy is the
        f-softargmax, the bootstrap its conjugate (the f-regularized soft value) and the bonus
        the generalised scaled log-policy of :func:`scaled_log_policy`, all with the unit
        reference.
    """
    for name, value, rank in (("q_target_tm1", q_target_tm1, 1), ("a_tm1", a_tm1, 0), ("r_t", r_t, 0),
                              ("discount_t", discount_t, 0), ("q_target_t", q_target_t, 1)):
        if jnp.ndim(value) != rank:
            raise ValueError(f"{name} must have rank {rank}, got shape {jnp.shape(value)}")
    bonus_log_pi = scaled_log_policy(q_target_tm1, temperature, divergence)[a_tm1]
    bonus = munchausen_alpha * jnp.clip(bonus_log_pi, log_clip_min, 0.0)
    return r_t + bonus + discount_t * soft_value(q_target_t, temperature, divergence=divergence)


def soft_td_residual(q_taken: Array, next_value: Array, discount) -> Array:
    """Soft temporal-difference residual ``q(s_t, a_t) - gamma V(s_{t+1})``.

    In inverse soft-Q learning (Garg et al. 2021; Wulfmeier et al. 2024, Eq. 14) this residual
    is the implicit reward the learned Q-function assigns to the transition. Pass
    ``next_value = 0`` (or ``discount = 0``) after a terminal state.
    """
    return q_taken - discount * next_value
