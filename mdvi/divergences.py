"""Divergences that regularize the greedy step.

The regularized greedy step of MDVI (Vieillard et al. 2020; Kozuno et al. 2022) is

    pi = argmax_p  <p, q> - temperature * D(p || ref),

and its optimal value is the conjugate ("soft value")

    V = max_p  <p, q> - temperature * D(p || ref).

For D = KL these are the Boltzmann policy ``pi ∝ ref * exp(q / temperature)`` and the
log-sum-exp value ``temperature * log sum_a ref(a) exp(q(a) / temperature)``. Roulet et al.
(2025, arXiv 2501.18537) generalise both to any f-divergence (the "f-softargmax" and its
conjugate). Every caller in the lab goes through a :class:`Divergence` object, so adding an
f-divergence means adding one class here; nothing upstream changes.

Conventions shared by all divergences:
  * the action axis is the last axis; leading axes are batch axes;
  * the reference measure is given in log space (``log_ref``, ``-inf`` marks actions outside
    its support), which keeps ``pi_{k-1}^alpha`` exact when probabilities underflow;
  * ``temperature`` is a scalar or broadcasts against ``q.shape[:-1]``; ``temperature = 0`` is
    the unregularized limit (hard max over the support of ``ref``).
"""

from __future__ import annotations

import abc

import jax
import jax.numpy as jnp

Array = jax.Array


# The centred form is used when the temperature exceeds 16 max |q|: above, the max shift's
# error (about A t eps / 2) could pass 8 A eps max |q| (3e-6 relative in float32, A = 6).
_CENTRED_RATIO = 16.0


def _expand_temperature(temperature, q: Array) -> Array:
    temperature = jnp.asarray(temperature, dtype=q.dtype)
    return jnp.expand_dims(temperature, -1)


class Divergence(abc.ABC):
    """Interface of a divergence usable in the regularized greedy step."""

    name: str

    @abc.abstractmethod
    def greedy_log_policy(self, q: Array, temperature, log_ref: Array) -> Array:
        """Log of ``argmax_p <p, q> - temperature * D(p || ref)`` (action axis last)."""

    @abc.abstractmethod
    def conjugate(self, q: Array, temperature, log_ref: Array) -> Array:
        """``max_p <p, q> - temperature * D(p || ref)``, reduced over the last axis."""

    @abc.abstractmethod
    def divergence(self, log_p: Array, log_ref: Array) -> Array:
        """``D(p || ref)`` from log-probabilities, reduced over the last axis."""


class KLDivergence(Divergence):
    """Kullback-Leibler divergence ``sum_a p(a) log(p(a) / ref(a))``.

    ``ref`` may be any non-negative measure (the counting measure ``log_ref = 0`` gives the
    entropy-regularized value ``temperature * logsumexp(q / temperature)``).
    """

    name = "kl"

    @staticmethod
    def _shifted_logits(q: Array, temperature, log_ref: Array):
        """``(support, q_max, t, positive, (q - q_max) / t + log ref)`` with ``t = 0`` made safe."""
        support = log_ref > -jnp.inf
        q_max = jnp.max(jnp.where(support, q, -jnp.inf), axis=-1, keepdims=True)
        t = _expand_temperature(temperature, q)
        positive = t > 0
        safe_t = jnp.where(positive, t, jnp.ones_like(t))
        # q - q_max as before; an infinite max keeps only the actions that reach it
        shifted = jnp.where(jnp.isfinite(q_max), q - q_max, jnp.where(q == q_max, 0.0, -jnp.inf))
        logits = jnp.where(support, shifted / safe_t + log_ref, -jnp.inf)
        return support, q_max, safe_t, positive, logits

    def conjugate(self, q: Array, temperature, log_ref: Array) -> Array:
        """``t log sum_a ref(a) exp(q(a) / t)``, accurate for every ``t`` in ``[0, inf]``.

        Two exact rewritings of the same value, chosen per row by comparing ``t`` with the
        scale ``c = max |q|`` (over the support of ``ref``); ``m = sum_a p(a) q(a)`` is the
        reference mean (``p = ref / Z``, ``Z`` the mass of ``ref``):

        * ``t <= 16 c`` (max shift): ``max q + t log sum_a ref(a) exp((q(a) - max q) / t)``.
          Every exponent is ``<= log ref(a)``, so nothing overflows; the rounding error of
          the sum (about ``A eps / 2``) is multiplied by ``t <= 16 c``: below ``8 A eps c``.
        * ``t > 16 c`` (centred): ``m + t log Z + t log1p(sum_a p(a) expm1((q(a) - m) / t))``.
          The exponents lie in ``(-1/8, 1/8)``; the sum is ``>= 0`` (Jensen) and carries the
          ``Var_p(q) / (2 t)`` correction with full relative precision, where the max shift
          would lose it (``t`` times a rounding error near 1). ``t = inf`` gives
          ``m + inf * log Z``: the reference mean for a probability ``ref``.

        Below the switch the result is bit-for-bit the classical max-shifted log-sum-exp.

        A reference whose mass is 1 up to rounding (``|log Z| <= A eps``) counts as a
        probability vector (``log Z = 0``). ``t = 0`` is the max over the support;
        ``+inf`` in ``q`` (on the support) gives ``+inf``, a support of ``-inf`` gives ``-inf``.
        """
        support, q_max, safe_t, positive, logits = self._shifted_logits(q, temperature, log_ref)
        t = _expand_temperature(temperature, q)
        # Max shift.
        log_sum = jnp.log(jnp.sum(jnp.exp(logits), axis=-1, keepdims=True))
        shifted = jnp.where(positive, q_max + safe_t * log_sum, q_max)
        # Centred on the reference mean.
        eps = jnp.finfo(q.dtype).eps
        log_mass = jax.nn.logsumexp(log_ref, axis=-1, keepdims=True)
        p = jnp.where(support, jnp.exp(log_ref - log_mass), 0.0)
        log_mass = jnp.where(jnp.abs(log_mass) <= q.shape[-1] * eps, 0.0, log_mass)
        finite = jnp.all(jnp.isfinite(q) | ~support, axis=-1, keepdims=True)
        q_safe = jnp.where(support & finite, q, 0.0)
        mean = jnp.sum(p * q_safe, axis=-1, keepdims=True)
        scale = jnp.max(jnp.abs(q_safe), axis=-1, keepdims=True)
        centred = finite & positive & (_CENTRED_RATIO * scale < t)
        t_centred = jnp.where(centred & jnp.isfinite(t), t, 1.0)
        x = jnp.where(support & centred, (q_safe - mean) / t_centred, 0.0)
        excess = jnp.sum(p * jnp.expm1(x), axis=-1, keepdims=True)
        correction = jnp.where(jnp.isinf(t), 0.0, t_centred * jnp.log1p(excess))
        mass_term = jnp.where(log_mass == 0.0, 0.0, jnp.where(centred, t, 0.0) * log_mass)
        value = jnp.where(centred, mean + correction + mass_term, shifted)
        value = jnp.where(jnp.isinf(q_max), q_max, value)
        return jnp.squeeze(value, -1)

    def greedy_log_policy(self, q: Array, temperature, log_ref: Array) -> Array:
        support, q_max, _, positive, logits = self._shifted_logits(q, temperature, log_ref)
        soft = logits - jax.nn.logsumexp(logits, axis=-1, keepdims=True)
        # t = 0: uniform over the maximisers inside the support (ties split evenly).
        is_max = support & (q == q_max)
        count = jnp.sum(is_max, axis=-1, keepdims=True).astype(q.dtype)
        hard = jnp.where(is_max, -jnp.log(count), -jnp.inf)
        return jnp.where(positive, soft, hard)

    def divergence(self, log_p: Array, log_ref: Array) -> Array:
        p = jnp.exp(log_p)
        inside = p > 0
        safe_log_p = jnp.where(inside, log_p, 0.0)
        safe_log_ref = jnp.where(inside, log_ref, 0.0)
        terms = jnp.where(inside, p * (safe_log_p - safe_log_ref), 0.0)
        return jnp.sum(terms, axis=-1)


KL = KLDivergence()

DIVERGENCES: dict[str, Divergence] = {KL.name: KL}


def get_divergence(name: str | Divergence) -> Divergence:
    """Look a divergence up by name, or pass an instance through.

    ``"kl"`` and the f-divergence families of :mod:`mdvi.f_divergences`: ``"reverse_kl"``,
    ``"chi2"``, ``"js"``, ``"jeffreys"``, ``"hellinger"``, ``"alpha:<alpha>"`` (e.g. ``"alpha:1.5"``)
    and ``"jsd:<beta>"`` (GKD's generalized JSD, e.g. ``"jsd:0.1"``).
    """
    if isinstance(name, Divergence):
        return name
    if isinstance(name, str) and name in DIVERGENCES:
        return DIVERGENCES[name]
    from mdvi.f_divergences import parse_f_divergence  # imports this module

    return parse_f_divergence(name)
