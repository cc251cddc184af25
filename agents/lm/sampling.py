"""Ancestral sampling from any transformer LM through its :class:`~agents.lm.transformer.Decoder`.

The sampler takes a decoder and parameters, not a config, so a teacher, a reference and a student
of different sizes on one token space sample through the same function.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from agents.lm.transformer import Decoder
from envs.token_mdp import EOS, sequence_mask
from mdvi import entropy, greedy_log_policy
from mdvi.divergences import KL, Divergence

Array = jax.Array


class Samples(NamedTuple):
    """Sequences drawn from a model, with the sampling distribution's statistics.

    Attributes:
      tokens: ``[N, T]`` int32, padded with ``EOS``.
      mask: ``[N, T]`` :func:`envs.token_mdp.sequence_mask`.
      entropy: ``[N, T]`` entropy of the sampling distribution at each real step (nats).
      log_probs: ``[N, T]`` its log-probability of the sampled action.
    """

    tokens: Array
    mask: Array
    entropy: Array
    log_probs: Array


def sample(
    decoder: Decoder, params, key: Array, num_sequences: int, temperature=1.0, *,
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
    (``log_ref = -inf``). Jittable (``num_sequences`` static); ``temperature`` may be traced.
    """
    space = decoder.space
    window = space.window
    is_eos = jnp.arange(space.num_actions) == EOS
    dtype = jax.tree.leaves(params)[0].dtype

    def body(carry, inputs):
        previous, done, cache = carry
        t, key = inputs
        logits, cache = decoder.step(params, previous, t, cache)  # [N, A]
        allowed = jnp.where(t < space.min_length, ~is_eos, jnp.where(t == window - 1, is_eos, True))
        log_ref = jnp.broadcast_to(jnp.where(allowed, log_reference, -jnp.inf), logits.shape).astype(logits.dtype)
        log_policy = greedy_log_policy(logits, temperature, log_ref=log_ref, divergence=divergence)
        action = jax.random.categorical(key, log_policy)
        action = jnp.where(done, EOS, action).astype(jnp.int32)
        step_entropy = jnp.where(done, 0.0, entropy(log_policy))
        step_log_prob = jnp.where(done, 0.0, jnp.take_along_axis(log_policy, action[:, None], -1)[:, 0])
        return (action, done | (action == EOS), cache), (action, step_entropy, step_log_prob)

    first = jnp.full((num_sequences,), space.bos, dtype=jnp.int32)
    done = jnp.zeros((num_sequences,), dtype=bool)
    cache = decoder.empty_cache(num_sequences, dtype)
    _, (tokens, step_entropy, step_log_prob) = jax.lax.scan(
        body, (first, done, cache), (jnp.arange(window), jax.random.split(key, window))
    )
    tokens = tokens.T
    return Samples(tokens, sequence_mask(tokens), step_entropy.T, step_log_prob.T)
