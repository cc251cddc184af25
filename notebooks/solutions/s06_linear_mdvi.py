"""Solutions to the exercises of notebook 06 (LS-MDVI and VWLS-MDVI on linear MDPs)."""

from __future__ import annotations

import numpy as np


def sibling_variance(horizon, q, v0):
    """Exercise 1: ``s2`` moves to ``s0`` w.p. ``q``, to the goal (value ``H``) w.p. 1/2 and to
    the zero state otherwise: ``E V = H/2 + q V0``, ``E V^2 = H^2/2 + q V0^2``, so
    ``Var = H^2/4 + q (1 - q) V0^2 - q H V0``."""
    q = np.asarray(q, float)
    mean = horizon / 2 + q * v0
    second = horizon**2 / 2 + q * v0**2
    return second - mean**2


def contrast_variance_by_hand(features, draws, weights, variances, phi_i, phi_j):
    """Exercise 2: ``theta = (X^T C X)^-1 X^T C y`` with ``C = diag(n f)`` and independent noise of
    variance ``sigma^2 / n`` at each point, so ``Var((phi_i - phi_j)^T theta) = g^T diag(sigma^2 / n) g``
    with ``g = C X (X^T C X)^-1 (phi_i - phi_j)``."""
    X = np.asarray(features, float)
    c = np.asarray(draws, float) * np.asarray(weights, float)
    gram = X.T @ (c[:, None] * X)
    g = c * (X @ np.linalg.solve(gram, np.asarray(phi_i, float) - np.asarray(phi_j, float)))
    return float(np.sum(g**2 * np.asarray(variances, float) / np.asarray(draws, float)))
