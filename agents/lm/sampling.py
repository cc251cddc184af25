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
from mdvi.divergences import KL, Divergence

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


def window_log_ref(space: TokenSpace, position) -> Array:
    """``[..., A]`` log reference measure of the length window at ``position`` (an int or array):
    0 on allowed actions, ``-inf`` on excluded ones (``EOS`` before ``space.min_length``, every
    regular token at the last position ``window - 1``)."""
    position = jnp.asarray(position)[..., None]
    is_eos = jnp.arange(space.num_actions) == EOS
    allowed = jnp.where(position < space.min_length, ~is_eos, jnp.where(position == space.window - 1, is_eos, True))
    return jnp.where(allowed, 0.0, -jnp.inf)


def window_log_policy(
    logits: Array, space: TokenSpace, temperature=1.0, position=None, *,
    divergence: str | Divergence = KL, log_reference: float = 0.0,
) -> Array:  # fmt: skip
    """The distribution a model samples from: ``softmax(logits / temperature)`` restricted to the
    length window, i.e. the core's KL-greedy step (:func:`mdvi.greedy_log_policy`) with the
    window's reference measure (:func:`window_log_ref`).

    ``logits`` is ``[..., T, A]`` (row ``t`` at position ``t``) or, with ``position`` given,
    ``[..., A]`` at that position. Its entries along a sequence are the model's exact
    ``log pi(x_t | x_{<t})``, so summing them scores whole sequences (:func:`sequence_log_probs`).
    A model trained with a Fenchel-Young f-loss samples from its f-softargmax instead: pass its
    ``divergence`` and constant ``log_reference`` (see :func:`sample`).
    """
    if position is None:
        position = jnp.arange(logits.shape[-2])[:, None]
        log_ref = window_log_ref(space, position[:, 0])
    else:
        log_ref = window_log_ref(space, position)
    log_ref = jnp.broadcast_to(log_ref + log_reference, logits.shape).astype(logits.dtype)
    return greedy_log_policy(logits, temperature, log_ref=log_ref, divergence=divergence)


def sequence_log_probs(logits: Array, tokens: Array, space: TokenSpace, prompt_length: int = 0, temperature=1.0) -> Array:
    """``[N]`` exact ``log pi(y | x)`` of each sequence's completion under the sampling
    distribution (:func:`window_log_policy`): the sum over the completion's real actions
    (positions ``prompt_length ..`` up to and including the first ``EOS``)."""
    chex.assert_rank([logits, tokens], [3, 2])
    log_policy = window_log_policy(logits, space, temperature)
    taken = jnp.take_along_axis(log_policy, tokens[..., None], -1)[..., 0]
    mask = completion_mask(tokens, prompt_length)
    return jnp.sum(jnp.where(mask > 0, taken, 0.0), axis=-1)


def sample(
    decoder: Decoder, params, key: Array, num_sequences: int, temperature=1.0, prompts: Array | None = None, *,
    divergence: str | Divergence = KL, log_reference: float = 0.0,
) -> Samples:  # fmt: skip
    """Ancestral sampling from ``softmax(Q / temperature)``, restricted to the length window.

    A model trained with a Fenchel-Young f-loss (:mod:`agents.lm.f_objectives`) defines the
    f-softargmax distribution, not the softmax of its logits: pass its ``divergence`` and the
    constant log reference ``log_reference`` (0: the unit reference; ``-log A``: the uniform
    one) to sample from ``argmax_p <p, Q> - temperature D(p || ref)``; sparse divergences then
    never sample a token the model gives probability 0.

    The window is the token space's: ``EOS`` is excluded before ``space.min_length`` and forced
    at the last position. The restriction is the core's KL-greedy step
    (:func:`mdvi.greedy_log_policy`) with a reference measure that is 0 on excluded actions
    (``log_ref = -inf``, :func:`window_log_policy`). With ``prompts [num_sequences, P]``
    (regular tokens, :mod:`envs.token_mdp`'s prompted tasks) the first ``P`` positions are the
    prompt, read through the key/value cache, and sampling starts at position ``P``; ``mask`` is
    then :func:`envs.token_mdp.completion_mask` and entropies and log-probabilities are 0 on the
    prompt. Jittable (``num_sequences`` and ``P`` static); ``temperature`` may be traced.
    """
    space = decoder.space
    window = space.window
    dtype = jax.tree.leaves(params)[0].dtype
    prompt_length = 0 if prompts is None else prompts.shape[-1]
    if prompt_length >= window:
        raise ValueError(f"prompts have {prompt_length} positions; at most window - 1 = {window - 1}")
    if prompts is None:
        prompts = jnp.zeros((num_sequences, 0), jnp.int32)
    chex.assert_shape(prompts, (num_sequences, prompt_length))
    forced = jnp.zeros((window, num_sequences), jnp.int32).at[:prompt_length].set(prompts.T.astype(jnp.int32))

    def body(carry, inputs):
        previous, done, cache = carry
        t, key, prompt_token = inputs
        logits, cache = decoder.step(params, previous, t, cache)  # [N, A]
        log_policy = window_log_policy(
            logits, space, temperature, position=t, divergence=divergence, log_reference=log_reference
        )
        in_prompt = t < prompt_length
        action = jax.random.categorical(key, log_policy)
        action = jnp.where(done, EOS, jnp.where(in_prompt, prompt_token, action)).astype(jnp.int32)
        live = ~done & ~in_prompt
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
    mask = completion_mask(tokens, prompt_length) if prompt_length else sequence_mask(tokens)
    return Samples(tokens, mask, step_entropy.T, step_log_prob.T)
