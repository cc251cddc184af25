"""Solutions to the exercises of notebook 04 (sample complexity with a generative model)."""

from __future__ import annotations

import numpy as np


def arm_value(discount, stay):
    """Exercise 1: an arm paying 1 per step and staying with probability ``p``:
    ``V = 1 + gamma p V``, so ``V = 1 / (1 - gamma p)``."""
    return 1.0 / (1.0 - discount * stay)


def crossing(probabilities, samples, level):
    """Exercise 2: the ``M`` at which a success-probability curve first reaches ``level``,
    interpolated linearly in ``log M`` between grid points (``nan`` if never reached)."""
    probabilities, log_m = np.asarray(probabilities, float), np.log(np.asarray(samples, float))
    above = np.nonzero(probabilities >= level)[0]
    if above.size == 0:
        return np.nan
    i = above[0]
    if i == 0:
        return float(np.exp(log_m[0]))
    p0, p1 = probabilities[i - 1], probabilities[i]
    t = (level - p0) / (p1 - p0)
    return float(np.exp(log_m[i - 1] + t * (log_m[i] - log_m[i - 1])))
