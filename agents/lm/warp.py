"""WARP's EMA-anchored RLOO (Rame et al. 2024, "WARP: On the Benefits of Weight Averaged Rewarded
Policies", arXiv 2406.16768, Sec. 3.1) as an objective of the lab's trainer.

RLOO (:func:`agents.lm.rl.rloo_objective`) on ``r - beta log(pi / pi_anchor)`` where the anchor
is not the fixed SFT policy but an exponential moving average of the policy's own weights,
``theta_ema <- (1 - mu) theta_ema + mu theta`` after every optimizer step
(:func:`agents.lm.weights.ema`). ``mu = 0`` keeps the anchor fixed at its initial value (the SFT
reference); ``mu = 1`` makes it the online policy. ``mu`` is a hyperparameter, so fixed and EMA
anchors train side by side in one vmapped program. The merge (SLERP of task vectors) and LITI are
pure pytree functions in :mod:`agents.lm.weights`.

WARP's settings as we read them (all **unconfirmed** here): ``beta = 0.1``, ``mu = 0.01``,
``M = 2`` runs merged with ``lambda = 0.5``, LITI ``eta = 0.3``, ``I = 2`` iterations.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from agents.lm import rl, weights
from agents.lm.objectives import Objective


def ema_anchor_update(extra: dict, params, hyper: dict) -> dict:
    """``extra["reference"] <- (1 - mu) extra["reference"] + mu params`` (the anchor's EMA step)."""
    return {**extra, "reference": weights.ema(params, extra["reference"], hyper["mu"])}


def rloo_ema_objective(name: str, reward: Callable, prompt_length: int, num_samples: int = 4) -> Objective:
    """RLOO against ``reward`` with the KL to an EMA anchor held in ``extra["reference"]``
    (start it at the SFT parameters); hyperparameters ``beta`` and ``mu``. The logged ``kl`` is
    the sample log-ratio to the anchor."""
    base = rl.rloo_objective(name, reward, prompt_length, num_samples)
    return dataclasses.replace(
        base,
        hyperparameters=("beta", "mu"),
        update_extra=ema_anchor_update,
        description=f"WARP: RLOO (k = {num_samples}) on r - beta log(pi / pi_ema), EMA anchor step mu",
    )
