"""Solutions to the exercises of notebook 07 (deep: DQN, M-DQN and Deep Variance Weighting)."""

from __future__ import annotations

import numpy as np


def optimal_scale(variances):
    """Exercise 1: ``(mean(eta / sigma^2) - 1)^2`` is 0, its minimum, at
    ``eta = 1 / mean(1 / sigma^2)``: the harmonic mean of the variances."""
    return 1.0 / np.mean(1.0 / np.asarray(variances, float))


def munchausen_probe_closed_form(discount, munchausen_alpha, log_clip_min):
    """Exercise 2: with gaps of many temperatures, ``tau log pi`` is ~0 on greedy actions and
    below the clip on dominated ones, whose bonus is then ``alpha_M l0``; the soft value of
    ``s1`` is ~1. So ``Q_M(s1) = (1, alpha_M l0)`` and ``Q_M(s0) = (gamma + alpha_M l0, 0.5 + gamma)``."""
    bonus = munchausen_alpha * log_clip_min
    return np.array([[discount + bonus, 0.5 + discount], [1.0, bonus]])
