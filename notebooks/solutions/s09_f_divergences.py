"""Solutions to the exercises of notebook 09 (f-divergences)."""

from __future__ import annotations

import numpy as np


def sparsemax_by_sorting(z):
    """Exercise 1: sparsemax of one row by sorting (Martins & Astudillo 2016, Algorithm 1).

    The support is the top ``k`` entries for the largest ``k`` with ``1 + k z_(k) > sum_{i<=k} z_(i)``;
    on it ``sum_j (z_j - tau) = 1`` gives ``tau``.
    """
    z = np.asarray(z, dtype=np.float64)
    z_sorted = np.sort(z)[::-1]
    cumulative = np.cumsum(z_sorted)
    k = np.arange(1, z.size + 1)
    support = k[1.0 + k * z_sorted > cumulative][-1]
    tau = (cumulative[support - 1] - 1.0) / support
    return np.maximum(z - tau, 0.0)


def entmax_margin(alpha):
    """Exercise 2: the label margin beyond which the alpha Fenchel-Young loss is 0, ``-f'(0+) = 1 / (alpha - 1)``."""
    return 1.0 / (alpha - 1.0)
