"""Solutions to the exercises of notebook 02 (MDVI: KL means averaging)."""

from __future__ import annotations

import numpy as np


def discounted_sum(qs, alpha):
    """Exercise 1: ``s_k = sum_{j=1..k} alpha^(k-j) q_j`` for every ``k``, written as the explicit sum.

    ``qs`` is ``[K, S, A]`` (``q_1..q_K``); returns ``[K, S, A]``. Quadratic in ``K`` on purpose:
    it is the closed form, not the recursion ``s_k = q_k + alpha s_{k-1}``.
    """
    qs = np.asarray(qs)
    K = qs.shape[0]
    out = np.zeros_like(qs)
    for k in range(K):
        weights = alpha ** (k - np.arange(k + 1))
        out[k] = np.tensordot(weights, qs[: k + 1], axes=1)
    return out


def alpha_beta(tau, kappa):
    """Exercise 2: ``pi_k ∝ pi_{k-1}^alpha exp(beta q_k)`` with ``alpha = tau/(tau+kappa)``, ``beta = 1/(tau+kappa)``.

    Setting the gradient of ``<p, q> - tau KL(p || pi_{k-1}) + kappa H(p)`` to zero (with a
    multiplier for ``sum p = 1``) gives ``(tau + kappa) log p = q + tau log pi_{k-1} + const``.
    """
    return tau / (tau + kappa), 1.0 / (tau + kappa)
