"""Every network of the lab, each as pure ``(init, apply)`` functions (Haiku transforms).

Keeping all Haiku code behind this module means a later move to another network library
changes one file. Callers never see Haiku modules, only ``hk.Transformed`` pairs.
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


# ---------------------------------------------------------------------------------------------
# Language models (token-level MDPs, issue 5): a small decoder-only transformer
# ---------------------------------------------------------------------------------------------


def sinusoidal_positions(length: int, width: int) -> jax.Array:
    """Fixed sinusoidal position encodings ``[length, width]`` (Vaswani et al. 2017, Sec. 3.5)."""
    position = jnp.arange(length)[:, None]
    rate = jnp.exp(-jnp.log(10_000.0) * jnp.arange(0, width, 2) / width)
    angles = position * rate[None]
    encoding = jnp.zeros((length, width))
    encoding = encoding.at[:, 0::2].set(jnp.sin(angles))
    return encoding.at[:, 1::2].set(jnp.cos(angles[:, : width // 2]))


class _DecoderLM(hk.Module):
    """Pre-LayerNorm causal transformer; ``__call__`` runs a whole window, ``decode`` one position
    with a key/value cache. Both create the same parameters (same module names)."""

    def __init__(self, num_actions, max_length, num_layers, width, num_heads, mlp_multiple, positions):
        super().__init__(name="transformer_lm")
        self.num_actions = num_actions
        self.max_length = max_length
        self.num_layers = num_layers
        self.width = width
        self.num_heads = num_heads
        self.key_size = width // num_heads
        self.mlp_multiple = mlp_multiple
        self.positions = positions
        init_scale = 0.02
        self.w_init = hk.initializers.TruncatedNormal(init_scale)
        self.projection_init = hk.initializers.TruncatedNormal(init_scale / (2 * num_layers) ** 0.5)

    def _layer_norm(self, name):
        return hk.LayerNorm(axis=-1, create_scale=True, create_offset=True, name=name)

    def _embed(self, ids, position_ids):
        x = hk.Embed(self.num_actions + 1, self.width, w_init=self.w_init, name="embed")(ids)
        if self.positions == "learned":
            table = hk.get_parameter("positions", [self.max_length, self.width], init=self.w_init)
        else:
            table = sinusoidal_positions(self.max_length, self.width)
        return x + table[position_ids]

    def _qkv(self, h, layer):
        shape = h.shape[:-1] + (self.num_heads, self.key_size)
        return tuple(
            hk.Linear(self.width, w_init=self.w_init, name=f"{part}_{layer}")(h).reshape(shape)
            for part in ("query", "key", "value")
        )

    def _attention_out(self, heads, layer):
        flat = heads.reshape(heads.shape[:-2] + (self.width,))
        return hk.Linear(self.width, w_init=self.projection_init, name=f"attention_out_{layer}")(flat)

    def _mlp(self, x, layer):
        h = self._layer_norm(f"ln_mlp_{layer}")(x)
        h = hk.Linear(self.mlp_multiple * self.width, w_init=self.w_init, name=f"mlp_in_{layer}")(h)
        h = jax.nn.gelu(h)
        return x + hk.Linear(self.width, w_init=self.projection_init, name=f"mlp_out_{layer}")(h)

    def _head(self, x):
        x = self._layer_norm("ln_final")(x)
        return hk.Linear(self.num_actions, w_init=self.w_init, name="logits")(x)

    def __call__(self, inputs):
        length = inputs.shape[-1]
        if length > self.max_length:
            raise ValueError(f"inputs have {length} positions, more than max_length = {self.max_length}")
        x = self._embed(inputs, jnp.arange(length))
        causal = jnp.tril(jnp.ones((length, length), dtype=bool))
        for layer in range(self.num_layers):
            q, k, v = self._qkv(self._layer_norm(f"ln_attn_{layer}")(x), layer)  # [..., T, H, K]
            scores = jnp.einsum("...thk,...shk->...hts", q, k) / self.key_size**0.5
            scores = jnp.where(causal, scores, -1e30)
            heads = jnp.einsum("...hts,...shk->...thk", jax.nn.softmax(scores, axis=-1), v)
            x = x + self._attention_out(heads, layer)
            x = self._mlp(x, layer)
        return self._head(x)

    def decode(self, ids, position, cache):
        """One position for a batch: ``ids [B]`` at ``position`` (scalar); cache ``(keys, values)``
        each ``[layers, B, max_length, H, K]``. Returns ``(logits [B, A], cache)``."""
        keys, values = cache
        x = self._embed(ids, position)
        visible = jnp.arange(self.max_length) <= position
        for layer in range(self.num_layers):
            q, k, v = self._qkv(self._layer_norm(f"ln_attn_{layer}")(x), layer)  # [B, H, K]
            keys = keys.at[layer, :, position].set(k)
            values = values.at[layer, :, position].set(v)
            scores = jnp.einsum("bhk,bshk->bhs", q, keys[layer]) / self.key_size**0.5
            scores = jnp.where(visible, scores, -1e30)
            heads = jnp.einsum("bhs,bshk->bhk", jax.nn.softmax(scores, axis=-1), values[layer])
            x = x + self._attention_out(heads, layer)
            x = self._mlp(x, layer)
        return self._head(x), (keys, values)


def _lm_arguments(num_actions, max_length, num_layers, width, num_heads, mlp_multiple, positions):
    for name, value in (
        ("num_actions", num_actions),
        ("max_length", max_length),
        ("num_layers", num_layers),
        ("width", width),
        ("num_heads", num_heads),
        ("mlp_multiple", mlp_multiple),
    ):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if width % num_heads:
        raise ValueError(f"width ({width}) must be divisible by num_heads ({num_heads})")
    if positions not in ("learned", "sinusoidal"):
        raise ValueError(f"unknown positions {positions!r}; choose 'learned' or 'sinusoidal'")
    return (num_actions, max_length, num_layers, width, num_heads, mlp_multiple, positions)


def transformer_lm(
    num_actions: int,
    max_length: int,
    *,
    num_layers: int = 2,
    width: int = 64,
    num_heads: int = 4,
    mlp_multiple: int = 4,
    positions: str = "learned",
) -> hk.Transformed:
    """A decoder-only (causal, pre-LayerNorm) transformer language model.

    ``apply(params, inputs)`` maps input ids ``[..., T]`` (``T <= max_length``) to logits
    ``[..., T, num_actions]``. Input ids are actions ``0 .. num_actions - 1`` plus a
    beginning-of-sequence id ``num_actions`` (so the embedding has ``num_actions + 1`` rows);
    the caller shifts the targets right behind it, so ``logits[..., t, :]`` scores the action
    taken in the state ``x_{<t}`` (the token-level MDP's ``Q(s_t, .)``).

    Raises:
      ValueError: for non-positive sizes, ``width`` not divisible by ``num_heads``, or an
        unknown ``positions``.
    """
    arguments = _lm_arguments(num_actions, max_length, num_layers, width, num_heads, mlp_multiple, positions)
    return hk.without_apply_rng(hk.transform(lambda inputs: _DecoderLM(*arguments)(inputs)))


def transformer_lm_decoder(
    num_actions: int,
    max_length: int,
    *,
    num_layers: int = 2,
    width: int = 64,
    num_heads: int = 4,
    mlp_multiple: int = 4,
    positions: str = "learned",
) -> hk.Transformed:
    """Incremental decoding for :func:`transformer_lm` with the same arguments (same parameters).

    ``apply(params, ids, position, cache) -> (logits, cache)`` runs one position for a batch of
    ``ids [B]`` with a key/value cache from :func:`empty_decoder_cache`; feeding ``BOS, x_0, ...``
    at positions ``0, 1, ...`` gives the rows of ``transformer_lm``'s logits one at a time.
    """
    arguments = _lm_arguments(num_actions, max_length, num_layers, width, num_heads, mlp_multiple, positions)
    return hk.without_apply_rng(hk.transform(lambda ids, position, cache: _DecoderLM(*arguments).decode(ids, position, cache)))


def empty_decoder_cache(
    batch_size: int, max_length: int, *, num_layers: int = 2, width: int = 64, num_heads: int = 4, dtype=jnp.float32
):
    """Zero key/value cache ``(keys, values)``, each ``[layers, B, max_length, heads, width // heads]``."""
    shape = (num_layers, batch_size, max_length, num_heads, width // num_heads)
    return jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)
