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

As optax's losses do, every loss returns per-token values ``[B, T]`` (0 on padding) and the
caller reduces them, usually with :func:`masked_mean` (the per-token average over the batch).

Token ids are checked on concrete inputs (``ValueError`` for ids outside ``[0, A)``). Under
``jit`` they cannot be: ``Q(s_t, a_t)`` of an out-of-range id is NaN, so every loss that reads
it is NaN there (documented, never the score of a clamped or wrapped id).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

from envs.token_mdp import EOS, validate_tokens
from mdvi import soft_td_residual, soft_value

Array = jax.Array


def check_scalar(name: str, value, low: float, high: float, *, low_open: bool = False):
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
    num_actions = logits.shape[-1]
    if isinstance(tokens, jax.core.Tracer):
        if not jnp.issubdtype(tokens.dtype, jnp.integer):
            raise ValueError(f"tokens must be integers, got dtype {tokens.dtype}")
    else:
        tokens = validate_tokens(tokens, num_actions)
    check_scalar("discount", discount, 0.0, 1.0)
    mask = mask.astype(logits.dtype)
    value = soft_value(logits, temperature)  # [B, T]
    in_range = (tokens >= 0) & (tokens < num_actions)
    q_taken = jnp.take_along_axis(logits, jnp.where(in_range, tokens, 0)[..., None], axis=-1)[..., 0]
    q_taken = jnp.where(in_range, q_taken, jnp.nan)
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


def _on_mask(values: Array, mask: Array) -> Array:
    return jnp.where(mask > 0, values, 0.0)


def token_log_likelihood(logits: Array, tokens: Array, mask: Array) -> Array:
    """``[B, T]`` ``log pi(a_t | s_t) = Q(s_t, a_t) - V(s_t)`` for ``pi = softmax(Q)``, 0 on padding."""
    tr = token_transitions(logits, tokens, mask)
    return _on_mask(tr.q_taken - tr.value, tr.mask)


def mle_loss(logits: Array, tokens: Array, mask: Array) -> Array:
    """Maximum likelihood (teacher forcing): ``[B, T]`` negative log-likelihood ``V(s_t) - Q(s_t, a_t)``."""
    tr = token_transitions(logits, tokens, mask)
    return _on_mask(tr.value - tr.q_taken, tr.mask)


def recovered_reward(logits: Array, tokens: Array, mask: Array, *, discount=1.0) -> Array:
    """The implicit per-token reward ``r_t = Q(s_t, a_t) - gamma V(s_{t+1})`` (0 on padding).

    Inverse soft-Q learning's reward (Garg et al. 2021, Sec. 4; Wulfmeier et al. 2024, Eq. 14).
    """
    tr = token_transitions(logits, tokens, mask, discount=discount)
    return _on_mask(tr.reward, tr.mask)


def td_squared(logits: Array, tokens: Array, mask: Array, *, discount=1.0) -> Array:
    """``[B, T]`` squared implicit reward ``(Q(s_t, a_t) - gamma V(s_{t+1}))^2``."""
    tr = token_transitions(logits, tokens, mask, discount=discount)
    return _on_mask(jnp.square(tr.reward), tr.mask)


def irl_sft_loss(logits: Array, tokens: Array, mask: Array, *, lam, discount=1.0) -> Array:
    """IRL-SFT (Wulfmeier et al. 2024, Eq. 14) per token: ``-log pi(a_t|s_t) + lam (Q - gamma V')^2``.

    With ``lam = 0`` it is :func:`mle_loss`, value and gradients. Its mean equals the offline
    chi^2 IQ-Learn loss with ``alpha = 1 / (4 lam)`` (:func:`iq_learn_chi2_loss`), because
    ``-log pi(a|s) = -(Q - gamma V') + (V - gamma V')`` on every transition.

    Args:
      lam: weight of the squared TD residual, >= 0 (may be a traced array, e.g. vmapped).
      discount: ``gamma`` in [0, 1].
    """
    check_scalar("lam", lam, 0.0, math.inf)
    tr = token_transitions(logits, tokens, mask, discount=discount)
    return _on_mask(tr.value - tr.q_taken + lam * jnp.square(tr.reward), tr.mask)


def _iq_learn_terms(tr: TokenTransitions, *, discount, value_weight, td_weight) -> Array:
    """IQ-Learn's per-transition terms ``-(Q - gamma V') + w_V (V - gamma V') + w_TD (Q - gamma V')^2``."""
    value_term = tr.value - discount * tr.next_value
    return _on_mask(-tr.reward + value_weight * value_term + td_weight * jnp.square(tr.reward), tr.mask)


def iq_learn_chi2_loss(logits: Array, tokens: Array, mask: Array, *, alpha, discount=1.0, temperature=1.0) -> Array:
    """Offline chi^2 IQ-Learn on expert transitions (Garg et al. 2021, "value_expert" + chi^2), per token:

        l_t = -(Q - gamma V') + (V - gamma V') + (Q - gamma V')^2 / (4 alpha),

    with ``V = soft_value(Q, temperature)``; the loss is its per-token mean over the expert
    transitions in ``(tokens, mask)``.

    Args:
      alpha: the chi^2 regularizer's ``alpha > 0`` (IQ-Learn's ``method.alpha``).
      discount: ``gamma`` in [0, 1].
      temperature: the soft-Q temperature (IQ-Learn's ``init_temp``; 1 for a language model).
    """
    check_scalar("alpha", alpha, 0.0, math.inf, low_open=True)
    tr = token_transitions(logits, tokens, mask, discount=discount, temperature=temperature)
    return _iq_learn_terms(tr, discount=discount, value_weight=1.0, td_weight=1.0 / (4.0 * alpha))


class OnlineTerms(NamedTuple):
    """The two per-token parts of :func:`online_irl_sft_loss`; the loss is
    ``masked_mean(expert, expert_mask) + masked_mean(policy, policy_mask)``."""

    expert: Array
    policy: Array


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
) -> OnlineTerms:
    """Online IRL-SFT: the value term of IQ-Learn on a mixture of expert and model samples.

        L = -E_E[Q - gamma V'] + (1 - f) E_E[V - gamma V'] + f E_pi[V - gamma V']
            + lam E_E[(Q - gamma V')^2],

    where ``E_pi`` averages over sequences sampled from the current model (drawn before the
    loss; no gradient through the sampling) and ``f = policy_fraction`` is the mix ratio (0.1
    in Wulfmeier et al. 2024). ``f = 0`` is :func:`irl_sft_loss`, because
    ``-(Q - gamma V') + (V - gamma V') = -log pi``. Returns the expert and policy per-token
    terms (:class:`OnlineTerms`); each is reduced over its own mask.
    """
    check_scalar("lam", lam, 0.0, math.inf)
    check_scalar("policy_fraction", policy_fraction, 0.0, 1.0)
    expert = token_transitions(expert_logits, expert_tokens, expert_mask, discount=discount)
    policy = token_transitions(policy_logits, policy_tokens, policy_mask, discount=discount)
    return OnlineTerms(
        expert=_iq_learn_terms(expert, discount=discount, value_weight=1.0 - policy_fraction, td_weight=lam),
        policy=_on_mask(policy_fraction * (policy.value - discount * policy.next_value), policy.mask),
    )
