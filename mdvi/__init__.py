"""mdvi: the regularized core (soft value, KL-greedy step, Munchausen target) and MDP solvers.

Modules: :mod:`mdvi.regularized` and :mod:`mdvi.divergences` (the core, re-exported here),
:mod:`mdvi.loop` (the one MDVI loop), :mod:`mdvi.tabular` (exact and sampled tabular
solvers), :mod:`mdvi.linear` (LS- and VWLS-MDVI), :mod:`mdvi.sweep` (hyperparameter grids).
"""

from mdvi.divergences import DIVERGENCES, KL, Divergence, KLDivergence, get_divergence
from mdvi.regularized import (
    Regularization,
    check_regularization,
    check_temperature,
    entropy,
    greedy_log_policy,
    kl_divergence,
    kl_entropy_to_munchausen,
    mdvi_greedy_step,
    mdvi_soft_value,
    munchausen_target,
    policy_from_sum,
    scaled_log_policy,
    soft_td_residual,
    soft_value,
)

__all__ = [
    "DIVERGENCES",
    "KL",
    "Divergence",
    "KLDivergence",
    "Regularization",
    "check_regularization",
    "check_temperature",
    "entropy",
    "get_divergence",
    "greedy_log_policy",
    "kl_divergence",
    "kl_entropy_to_munchausen",
    "mdvi_greedy_step",
    "mdvi_soft_value",
    "munchausen_target",
    "policy_from_sum",
    "scaled_log_policy",
    "soft_td_residual",
    "soft_value",
]
