"""Solutions to the exercises of notebook 03 (Munchausen RL is MDVI)."""

from __future__ import annotations

import numpy as np


def munchausen_action_gap(gap, munchausen_alpha):
    """Exercise 1: the fixed point's action gap is ``gap_kappa / (1 - alpha_M)``.

    ``q_M = q_kappa + alpha_M tau log softmax(q_kappa / kappa)`` with ``kappa = (1 - alpha_M) tau``:
    the log-ratio of two actions' probabilities is ``gap / kappa``, so the gap grows by
    ``alpha_M tau / kappa = alpha_M / (1 - alpha_M)`` times itself.
    """
    return gap / (1.0 - munchausen_alpha)


def probe_soft_q(discount, kappa):
    """Exercise 2: the entropy-regularized optimum of the two-step probe, by hand.

    ``s1`` is the last step: ``q(s1) = r1``; ``s0`` bootstraps once:
    ``q(s0, a) = r0(a) + gamma kappa log sum_b exp(r1(b) / kappa)``.
    """
    r0, r1 = np.array([0.0, 0.5]), np.array([1.0, 0.0])
    v1 = kappa * np.log(np.sum(np.exp(r1 / kappa)))
    return np.stack([r0 + discount * v1, r1])
