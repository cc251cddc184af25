"""Solutions to the exercises of notebook 08 (inverse soft-Q for language models)."""

from __future__ import annotations

import numpy as np


def iq_alpha(lam):
    """Exercise 1: the TD penalty ``(Q - gamma V')^2 / (4 alpha)`` equals ``lam (Q - gamma V')^2``."""
    return 1.0 / (4.0 * lam)


def irl_lambda(alpha):
    """Exercise 1, the other way: ``lam = 1 / (4 alpha)``."""
    return 1.0 / (4.0 * alpha)


def inverse_soft_bellman(q, transitions, discount):
    """Exercise 2: ``r = Q - gamma P V_Q`` with ``V_Q(s) = log sum_a exp Q(s, a)`` (stable logsumexp)."""
    q = np.asarray(q, float)
    top = q.max(-1)
    values = top + np.log(np.exp(q - top[:, None]).sum(-1))
    return q - discount * np.einsum("san,n->sa", np.asarray(transitions, float), values)
