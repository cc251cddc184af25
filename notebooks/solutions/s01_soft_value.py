"""Solutions to the exercises of notebook 01 (the soft value and the smooth Bellman operator)."""

from __future__ import annotations

import jax.numpy as jnp

from mdvi import soft_value


def soft_value_bounds(q, temperature):
    """Exercise 1: ``max q <= tau logsumexp(q / tau) <= max q + tau log A``.

    Lower bound: keep only the largest term of the sum. Upper bound: every term is at most
    ``exp(max q / tau)``, and there are ``A`` of them.
    """
    q = jnp.asarray(q)
    return jnp.max(q, -1), jnp.max(q, -1) + temperature * jnp.log(q.shape[-1])


def soft_value_gradient(q, temperature):
    """Exercise 2: the gradient of the soft value is the soft-greedy policy ``softmax(q / tau)``.

    Computed here by central finite differences of :func:`mdvi.soft_value`, an independent
    route from ``jax.nn.softmax``.
    """
    q = jnp.asarray(q, dtype=jnp.float64)
    h = 1e-6
    eye = jnp.eye(q.shape[-1], dtype=q.dtype)
    return jnp.stack([(soft_value(q + h * e, temperature) - soft_value(q - h * e, temperature)) / (2 * h) for e in eye])
