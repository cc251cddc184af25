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
    def _masked_max(q: Array, log_ref: Array) -> tuple[Array, Array]:
        support = log_ref > -jnp.inf
        q_max = jnp.max(jnp.where(support, q, -jnp.inf), axis=-1, keepdims=True)
        return support, q_max

    def conjugate(self, q: Array, temperature, log_ref: Array) -> Array:
        # V = q_max + t * log sum_a ref(a) exp((q(a) - q_max) / t): every exponent is
        # <= log ref(a), so nothing overflows, and the sum holds ref(argmax) > 0, so the log
        # is finite. At t = 0 the value is the max over the support of ref.
        support, q_max = self._masked_max(q, log_ref)
        t = _expand_temperature(temperature, q)
        positive = t > 0
        safe_t = jnp.where(positive, t, jnp.ones_like(t))
        exponent = jnp.where(support, (q - q_max) / safe_t + log_ref, -jnp.inf)
        log_mass = jnp.log(jnp.sum(jnp.exp(exponent), axis=-1, keepdims=True))
        value = jnp.where(positive, q_max + safe_t * log_mass, q_max)
        return jnp.squeeze(value, -1)

    def greedy_log_policy(self, q: Array, temperature, log_ref: Array) -> Array:
        support, q_max = self._masked_max(q, log_ref)
        t = _expand_temperature(temperature, q)
        positive = t > 0
        safe_t = jnp.where(positive, t, jnp.ones_like(t))
        logits = jnp.where(support, (q - q_max) / safe_t + log_ref, -jnp.inf)
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
    if name in DIVERGENCES:
        return DIVERGENCES[name]
    from mdvi.f_divergences import parse_f_divergence  # imports this module

    return parse_f_divergence(name)
