"""The deep-RL agents' networks, each as pure ``(init, apply)`` functions (Haiku transforms).

Callers never see Haiku modules, only ``hk.Transformed`` pairs. The language models' transformer
lives in :mod:`agents.lm.transformer`.
"""

from __future__ import annotations

import haiku as hk
import jax
import jax.numpy as jnp

# ---------------------------------------------------------------------------------------------
# Q-networks for MinAtar (Young & Tian 2019; Kitamura et al. 2023, official DVW code)
# ---------------------------------------------------------------------------------------------


class Im2ColConv(hk.Module):
    """A stride-1 VALID 2-D convolution written as one matrix product over image patches.

    Same function and parameter shapes as ``hk.Conv2D(features, kernel, padding="VALID")``
    (weights ``[k, k, C, F]``), but on 10x10 MinAtar frames XLA:CPU runs the patch-matrix
    product faster than its generic convolution at the small batches DQN uses.
    """

    def __init__(self, features: int, kernel: int = 3, name: str | None = None):
        super().__init__(name=name)
        self.features = features
        self.kernel = kernel

    def __call__(self, x: jax.Array) -> jax.Array:
        batch, height, width, channels = x.shape
        k = self.kernel
        out_h, out_w = height - k + 1, width - k + 1
        fan_in = k * k * channels
        w = hk.get_parameter(
            "w", (k, k, channels, self.features), x.dtype,
            init=hk.initializers.VarianceScaling(1.0, "fan_avg", "uniform"),
        )
        b = hk.get_parameter("b", (self.features,), x.dtype, init=jnp.zeros)
        patches = jnp.concatenate(
            [x[:, i:i + out_h, j:j + out_w, :] for i in range(k) for j in range(k)], axis=-1
        )  # [B, out_h, out_w, k*k*C], ordered (i, j, c) like w
        return patches @ w.reshape(fan_in, self.features) + b


def _q_heads(torso: jax.Array, num_actions: int, variance_head: bool) -> jax.Array:
    """Q-values ``[B, A]`` from a torso; with ``variance_head`` also log-variances read through a
    stop-gradient (fitting them never moves the Q-values' features): ``[B, 2A]``."""
    q = hk.Linear(num_actions, name="head")(torso)
    if not variance_head:
        return q
    log_variance = hk.Linear(num_actions, name="variance_head")(jax.lax.stop_gradient(torso))
    return jnp.concatenate([q, log_variance], axis=-1)


def minatar_q_network(
    num_actions: int, hidden: int = 128, conv_features: int = 16, variance_head: bool = False
) -> hk.Transformed:
    """Conv(C -> 16, 3x3, stride 1, VALID) -> ReLU -> Linear(1024 -> 128) -> ReLU -> Linear(A).

    The architecture of the official DVW MinAtar code (and of MinAtar's own DQN example).
    Input: float observations ``[B, 10, 10, C]``; output: ``[B, num_actions]``. With
    ``variance_head`` a second linear head reads the same torso through a stop-gradient (so
    fitting it never moves the Q-values' features) and the output is ``[B, 2 * num_actions]``:
    Q-values, then log-variances.
    """

    def forward(obs: jax.Array) -> jax.Array:
        x = jax.nn.relu(Im2ColConv(conv_features, 3, name="conv")(obs))
        x = x.reshape(x.shape[0], -1)
        torso = jax.nn.relu(hk.Linear(hidden, name="hidden")(x))
        return _q_heads(torso, num_actions, variance_head)

    return hk.without_apply_rng(hk.transform(forward))


def mlp_q_network(num_actions: int, hidden: tuple[int, ...] = (64, 64), variance_head: bool = False) -> hk.Transformed:
    """A small MLP Q-network on flattened observations (probe environments, classic control).

    ``variance_head`` as in :func:`minatar_q_network`.
    """

    def forward(obs: jax.Array) -> jax.Array:
        x = obs.reshape(obs.shape[0], -1)
        for i, width in enumerate(hidden):
            x = jax.nn.relu(hk.Linear(width, name=f"hidden_{i}")(x))
        return _q_heads(x, num_actions, variance_head)

    return hk.without_apply_rng(hk.transform(forward))
