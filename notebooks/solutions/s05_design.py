"""Solutions to the exercises of notebook 05 (G-optimal design and Kiefer-Wolfowitz)."""

from __future__ import annotations

import numpy as np


def average_leverage(features, weights):
    """Exercise 1: ``sum_i pi_i x_i^T V(pi)^-1 x_i = tr(V^-1 sum_i pi_i x_i x_i^T) = tr(I_d) = d``."""
    x, pi = np.asarray(features), np.asarray(weights)
    v = (x * pi[:, None]).T @ x
    leverage = np.einsum("nd,nd->n", x @ np.linalg.inv(v), x)
    return float(pi @ leverage)


def circle_design(n):
    """Exercise 2: ``n`` equally spaced unit vectors; the uniform design is G-optimal.

    ``V = (1/n) sum_i x_i x_i^T = I / 2`` for ``n >= 3`` equally spaced angles (the cos 2t and
    sin 2t sums vanish), so every leverage is ``x^T (2 I) x = 2 = d``: ``g = d``, optimal by
    Kiefer-Wolfowitz.
    """
    angles = 2 * np.pi * np.arange(n) / n
    return np.stack([np.cos(angles), np.sin(angles)], 1), np.full(n, 1.0 / n)
