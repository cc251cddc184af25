"""Ancestral sampling from any transformer LM through its :class:`~agents.lm.transformer.Decoder`.

The sampler takes a decoder and parameters, not a config, so a teacher, a reference and a student
of different sizes on one token space sample through the same function.
"""

from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

from agents.lm.transformer import Decoder
from envs.token_mdp import EOS, TokenSpace, completion_mask, sequence_mask
from mdvi import entropy, greedy_log_policy

Array = jax.Array


class Samples(NamedTuple):
    """Sequences drawn from a model, with the sampling distribution's statistics.

    Attributes:
      tokens: ``[N, T]`` int32, padded with ``EOS``.
      mask: ``[N, T]`` :func:`envs.token_mdp.sequence_mask` (the completion mask when prompted).
      entropy: ``[N, T]`` entropy of the sampling distribution at each real step (nats).
      log_probs: ``[N, T]`` its log-probability of the sampled action.
    """

    tokens: Array
    mask: Array
    entropy: Array
    log_probs: Array


def allowed_actions(space: TokenSpace, position) -> Array:
    """``[..., A]`` bool: the actions of the length window at ``position`` (``EOS`` excluded before
    ``space.min_length``, forced at the last position); ``position`` may be an array."""
    position = jnp.asarray(position)[..., None]
    is_eos = jnp.arange(space.num_actions) == EOS
    return jnp.where(position < space.min_length, ~is_eos, jnp.where(position == space.window - 1, is_eos, True))


def window_log_policy(logits: Array, space: TokenSpace, temperature=1.0, position=None) -> Array:
    """The distribution a model samples from: ``softmax(logits / temperature)`` restricted to the
    length window, via the core's KL-greedy step with ``log_ref = -inf`` outside it.

    ``logits`` is ``[..., T, A]`` (row ``t`` at position ``t``) unless ``position`` is given, in
    which case it is ``[..., A]`` at that one position. This is the model's exact conditional
    ``log pi(. | x_{<t})``: :func:`sample` draws from it, and the distillation losses and metrics
    score it (:mod:`agents.lm.distill`).
    """
    if position is None:
        position = jnp.arange(logits.shape[-2])[:, None] * jnp.ones(logits.shape[-2:-1] + (1,), jnp.int32)
        allowed = allowed_actions(space, position[..., 0])
    else:
        allowed = allowed_actions(space, position)
    log_ref = jnp.broadcast_to(jnp.where(allowed, 0.0, -jnp.inf), logits.shape).astype(logits.dtype)
    return greedy_log_policy(logits, temperature, log_ref=log_ref)


def sample(decoder: Decoder, params, key: Array, num_sequences: int, temperature=1.0, prompts: Array | None = None) -> Samples:
    """Ancestral sampling from ``softmax(Q / temperature)``, restricted to the length window
    (:func:`window_log_policy`).

    The window is the token space's: ``EOS`` is excluded before ``space.min_length`` and forced
    at the last position. With ``prompts [num_sequences, P]`` (regular tokens, see
    :mod:`envs.token_mdp`'s prompted tasks) the first ``P`` positions are the prompt, fed through
    the key/value cache, and sampling starts at position ``P``; the returned ``mask`` is then the
    completion mask (entropy and log-probabilities are 0 on the prompt). ``prompts=None`` or
    ``P = 0`` is unprompted sampling. Jittable (``num_sequences`` and ``P`` static);
    ``temperature`` may be traced.
    """
    space = decoder.space
    window = space.window
    dtype = jax.tree.leaves(params)[0].dtype
    prompt_length = 0 if prompts is None else prompts.shape[-1]
    if prompts is not None:
        chex.assert_shape(prompts, (num_sequences, prompt_length))
        if prompt_length >= window:
            raise ValueError(f"prompts have {prompt_length} positions; at most window - 1 = {window - 1}")
        forced = jnp.pad(prompts.astype(jnp.int32), ((0, 0), (0, window - prompt_length))).T  # [T, N]
    else:
        forced = jnp.zeros((window, 0), jnp.int32)

    def body(carry, inputs):
        previous, done, cache = carry
        t, key, prompt_column = inputs
        logits, cache = decoder.step(params, previous, t, cache)  # [N, A]
        log_policy = window_log_policy(logits, space, temperature, position=t)
        action = jax.random.categorical(key, log_policy)
        action = jnp.where(done, EOS, action).astype(jnp.int32)
        live = ~done
        if prompt_length:
            in_prompt = t < prompt_length
            action = jnp.where(in_prompt, prompt_column, action)
            live = live & ~in_prompt
        step_entropy = jnp.where(live, entropy(log_policy), 0.0)
        step_log_prob = jnp.where(live, jnp.take_along_axis(log_policy, action[:, None], -1)[:, 0], 0.0)
        return (action, done | (action == EOS), cache), (action, step_entropy, step_log_prob)

    first = jnp.full((num_sequences,), space.bos, dtype=jnp.int32)
    done = jnp.zeros((num_sequences,), dtype=bool)
    cache = decoder.empty_cache(num_sequences, dtype)
    _, (tokens, step_entropy, step_log_prob) = jax.lax.scan(
        body, (first, done, cache), (jnp.arange(window), jax.random.split(key, window), forced)
    )
    tokens = tokens.T
    mask = sequence_mask(tokens) if not prompt_length else completion_mask(tokens, prompt_length)
    return Samples(tokens, mask, step_entropy.T, step_log_prob.T)
