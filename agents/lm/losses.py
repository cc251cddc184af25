"""Token-level losses of language models as soft Q-functions: MLE, IRL-SFT, chi^2 IQ-Learn.

Every loss is a pure function of ``(logits, tokens, mask)`` (plus scalars) with the token-level
MDP conventions of :mod:`envs.token_mdp`: ``logits[b, t]`` are ``Q(s_t, .)`` for the state
``s_t = x_{<t}``, ``tokens[b, t]`` is the action ``a_t``, ``mask[b, t]`` is 1 on real actions (up
to and including the first ``EOS``) and 0 on padding. Transitions are deterministic; the value
after ``EOS`` is 0 and so is the value of a successor outside the window (last position).

Following Wulfmeier et al. (2024, arXiv 2409.01369, Eq. 14) the logits *are* the soft
Q-function, the policy is ``softmax(Q)`` and the state value is the core's soft value
``V(s) = soft_value(Q(s, .), 1)`` (:func:`mdvi.soft_value`), with gradients through ``V(s_{t+1})``
(no target network, as in IQ-Learn's ``use_target=False``). The implicit (recovered) reward of a
transition is the core's soft TD residual ``Q(s_t, a_t) - gamma V(s_{t+1})``
(:func:`mdvi.soft_td_residual`).

Averages are per token: ``sum(mask * x) / sum(mask)`` over the whole batch.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

from envs.token_mdp import EOS
from mdvi import soft_td_residual, soft_value

Array = jax.Array


def _check_scalar(name: str, value, low: float, high: float, *, low_open: bool = False):
    """Validate a concrete scalar hyperparameter; traced values (e.g. vmapped lambdas) pass."""
    if isinstance(value, jax.core.Tracer):
        return
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number, got {value!r}") from None
    if math.isnan(value) or value < low or value > high or (low_open and value == low):
        bracket = "(" if low_open else "["
        raise ValueError(f"{name} must lie in {bracket}{low}, {high}], got {value}")


class TokenTransitions(NamedTuple):
    """The per-transition quantities every loss here is built from (``[B, T]`` each).

    Attributes:
      q_taken: ``Q(s_t, a_t)``.
      value: ``V(s_t)`` (the soft value of the state the action was taken in).
      next_value: ``V(s_{t+1})``, 0 where the successor is terminal (after ``EOS``), on padding
        and at the last position.
      reward: the recovered reward ``Q(s_t, a_t) - gamma V(s_{t+1})``.
      mask: float ``[B, T]``, 1 on real transitions.
    """

    q_taken: Array
    value: Array
    next_value: Array
    reward: Array
    mask: Array


def token_transitions(logits: Array, tokens: Array, mask: Array, *, discount=1.0, temperature=1.0) -> TokenTransitions:
    """Gather ``Q(s_t, a_t)``, ``V(s_t)``, ``V(s_{t+1})`` and the TD residual from logits.

    Args:
      logits: ``[B, T, A]`` soft Q-values (raw logits; never normalise them first: the
        per-state offset is what the TD term pins down).
      tokens: ``[B, T]`` integer actions.
      mask: ``[B, T]`` 1 on real transitions, 0 on padding.
      discount: ``gamma`` in [0, 1].
      temperature: the soft value's temperature (1 for the language-model policy ``softmax(Q)``).
    """
    chex.assert_rank([logits, tokens, mask], [3, 2, 2])
    chex.assert_equal_shape_prefix([logits, tokens, mask], 2)
    if not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise ValueError(f"tokens must be integers, got dtype {tokens.dtype}")
    _check_scalar("discount", discount, 0.0, 1.0)
    mask = mask.astype(logits.dtype)
    value = soft_value(logits, temperature)  # [B, T]
    q_taken = jnp.take_along_axis(logits, tokens[..., None], axis=-1)[..., 0]
    length = tokens.shape[-1]
    inside = jnp.arange(length) < length - 1
    continues = (mask > 0) & (tokens != EOS) & inside
    shifted = jnp.concatenate([value[:, 1:], jnp.zeros_like(value[:, :1])], axis=1)
    next_value = jnp.where(continues, shifted, 0.0)
    reward = soft_td_residual(q_taken, next_value, discount)
    return TokenTransitions(q_taken, value, next_value, reward, mask)


def masked_mean(values: Array, mask: Array) -> Array:
    """``sum(mask * values) / max(sum(mask), 1)``; padded entries never leak into the value."""
    chex.assert_equal_shape([values, mask])
    total = jnp.sum(jnp.where(mask > 0, values, 0.0))
    return total / jnp.maximum(jnp.sum(mask), 1.0)


def token_log_likelihood(logits: Array, tokens: Array, mask: Array) -> Array:
    """``[B, T]`` ``log pi(a_t | s_t) = Q(s_t, a_t) - V(s_t)`` for ``pi = softmax(Q)``, 0 on padding."""
    tr = token_transitions(logits, tokens, mask)
    return jnp.where(tr.mask > 0, tr.q_taken - tr.value, 0.0)


def mle_loss(logits: Array, tokens: Array, mask: Array) -> Array:
    """Maximum likelihood (teacher forcing): the mean negative log-likelihood per token."""
    tr = token_transitions(logits, tokens, mask)
    return masked_mean(tr.value - tr.q_taken, tr.mask)


def recovered_reward(logits: Array, tokens: Array, mask: Array, *, discount=1.0) -> Array:
    """The implicit per-token reward ``r_t = Q(s_t, a_t) - gamma V(s_{t+1})`` (0 on padding).

    Inverse soft-Q learning's reward (Garg et al. 2021, Sec. 4; Wulfmeier et al. 2024, Eq. 14).
    """
    tr = token_transitions(logits, tokens, mask, discount=discount)
    return jnp.where(tr.mask > 0, tr.reward, 0.0)


def td_squared(logits: Array, tokens: Array, mask: Array, *, discount=1.0) -> Array:
    """Mean squared implicit reward ``E[(Q(s_t, a_t) - gamma V(s_{t+1}))^2]`` per token."""
    tr = token_transitions(logits, tokens, mask, discount=discount)
    return masked_mean(jnp.square(tr.reward), tr.mask)


def irl_sft_loss(logits: Array, tokens: Array, mask: Array, *, lam, discount=1.0) -> Array:
    """IRL-SFT (Wulfmeier et al. 2024, Eq. 14): ``NLL + lam * E[(Q(s_t, a_t) - gamma V(s_{t+1}))^2]``.

    With ``lam = 0`` it is :func:`mle_loss`, value and gradients. It equals the offline chi^2
    IQ-Learn loss with ``alpha = 1 / (4 lam)`` (:func:`iq_learn_chi2_loss`), because
    ``-log pi(a|s) = -(Q - gamma V') + (V - gamma V')`` on every transition.

    Args:
      lam: weight of the squared TD residual, >= 0 (may be a traced array, e.g. vmapped).
      discount: ``gamma`` in [0, 1].
    """
    _check_scalar("lam", lam, 0.0, math.inf)
    return mle_loss(logits, tokens, mask) + lam * td_squared(logits, tokens, mask, discount=discount)


def iq_learn_chi2_loss(logits: Array, tokens: Array, mask: Array, *, alpha, discount=1.0, temperature=1.0) -> Array:
    """Offline chi^2 IQ-Learn on expert transitions (Garg et al. 2021, "value_expert" + chi^2).

        L = -E[Q - gamma V'] + E[V - gamma V'] + E[(Q - gamma V')^2] / (4 alpha),

    with ``V = soft_value(Q, temperature)`` and every expectation a per-token mean over the
    expert transitions in ``(tokens, mask)``.

    Args:
      alpha: the chi^2 regularizer's ``alpha > 0`` (IQ-Learn's ``method.alpha``).
      discount: ``gamma`` in [0, 1].
      temperature: the soft-Q temperature (IQ-Learn's ``init_temp``; 1 for a language model).
    """
    _check_scalar("alpha", alpha, 0.0, math.inf, low_open=True)
    tr = token_transitions(logits, tokens, mask, discount=discount, temperature=temperature)
    value_term = tr.value - discount * tr.next_value
    return (
        -masked_mean(tr.reward, tr.mask)
        + masked_mean(value_term, tr.mask)
        + masked_mean(jnp.square(tr.reward), tr.mask) / (4.0 * alpha)
    )


def online_irl_sft_loss(
    expert_logits: Array,
    expert_tokens: Array,
    expert_mask: Array,
    policy_logits: Array,
    policy_tokens: Array,
    policy_mask: Array,
    *,
    lam,
    policy_fraction,
    discount=1.0,
) -> Array:
    """Online IRL-SFT: the value term of IQ-Learn on a mixture of expert and model samples.

        L = -E_E[Q - gamma V'] + (1 - f) E_E[V - gamma V'] + f E_pi[V - gamma V']
            + lam E_E[(Q - gamma V')^2],

    where ``E_pi`` averages over sequences sampled from the current model (no gradient through
    the sampling) and ``f = policy_fraction`` is the mix ratio (0.1 in Wulfmeier et al. 2024).
    ``f = 0`` is :func:`irl_sft_loss`, because ``-(Q - gamma V') + (V - gamma V') = -log pi``.
    """
    _check_scalar("lam", lam, 0.0, math.inf)
    _check_scalar("policy_fraction", policy_fraction, 0.0, 1.0)
    expert = token_transitions(expert_logits, expert_tokens, expert_mask, discount=discount)
    policy = token_transitions(policy_logits, policy_tokens, policy_mask, discount=discount)
    expert_value = masked_mean(expert.value - discount * expert.next_value, expert.mask)
    policy_value = masked_mean(policy.value - discount * policy.next_value, policy.mask)
    return (
        -masked_mean(expert.reward, expert.mask)
        + (1.0 - policy_fraction) * expert_value
        + policy_fraction * policy_value
        + lam * masked_mean(jnp.square(expert.reward), expert.mask)
    )
