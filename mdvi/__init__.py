"""mdvi: the regularized core (soft value, KL-greedy step, Munchausen target) and MDP solvers."""

from mdvi.divergences import DIVERGENCES, KL, Divergence, KLDivergence, get_divergence
from mdvi.regularized import (
    Regularization,
    entropy,
    greedy_log_policy,
    kl_divergence,
    kl_entropy_to_munchausen,
    mdvi_greedy_step,
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
    "entropy",
    "get_divergence",
    "greedy_log_policy",
    "kl_divergence",
    "kl_entropy_to_munchausen",
    "mdvi_greedy_step",
    "munchausen_target",
    "policy_from_sum",
    "scaled_log_policy",
    "soft_td_residual",
    "soft_value",
]
