"""The transformer of the LM lab: its spec, the network, the incremental decoder with its key/value
cache, and a scalar (reward) head on the same torso, each as pure functions (Haiku transforms).

A decoder-only, causal, pre-LayerNorm transformer (Vaswani et al. 2017; GPT-2's pre-LN layout,
Radford et al. 2019). Inputs are actions ``0 .. num_actions - 1`` of a token space
(:class:`envs.token_mdp.TokenSpace`) plus a beginning-of-sequence id ``num_actions``; the caller
shifts targets right behind it (:func:`shift_right`), so ``logits[..., t, :]`` scores the action
taken in state ``x_{<t}``: the token-level MDP's ``Q(s_t, .)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Literal, NamedTuple

import haiku as hk
import jax
import jax.numpy as jnp

from envs.token_mdp import TokenSpace

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class TransformerSpec:
    """The architecture (its vocabulary and window come from the :class:`TokenSpace`)."""

    num_layers: int = 2
    width: int = 64
    num_heads: int = 4
    mlp_multiple: int = 4
    """Hidden width of each MLP block, in multiples of ``width``."""
    positions: Literal["learned", "sinusoidal"] = "learned"

    def __post_init__(self):
        for name in ("num_layers", "width", "num_heads", "mlp_multiple"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.width % self.num_heads:
            raise ValueError(f"width ({self.width}) must be divisible by num_heads ({self.num_heads})")
        if self.positions not in ("learned", "sinusoidal"):
            raise ValueError(f"unknown positions {self.positions!r}; choose 'learned' or 'sinusoidal'")

    @property
    def key_size(self) -> int:
        return self.width // self.num_heads


def sinusoidal_positions(length: int, width: int) -> Array:
    """Fixed sinusoidal position encodings ``[length, width]`` (Vaswani et al. 2017, Sec. 3.5)."""
    position = jnp.arange(length)[:, None]
    rate = jnp.exp(-jnp.log(10_000.0) * jnp.arange(0, width, 2) / width)
    angles = position * rate[None]
    encoding = jnp.zeros((length, width))
    encoding = encoding.at[:, 0::2].set(jnp.sin(angles))
    return encoding.at[:, 1::2].set(jnp.cos(angles[:, : width // 2]))


class KVCache(NamedTuple):
    """Keys and values of every layer seen so far, each ``[layers, B, window, heads, key_size]``."""

    keys: Array
    values: Array


def empty_cache(spec: TransformerSpec, space: TokenSpace, batch_size: int, dtype=jnp.float32) -> KVCache:
    """A zero :class:`KVCache` for ``batch_size`` sequences of ``space.window`` positions."""
    shape = (spec.num_layers, batch_size, space.window, spec.num_heads, spec.key_size)
    return KVCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))


class _Transformer(hk.Module):
    """``__call__`` runs a whole window, ``decode`` one position with a :class:`KVCache`; both make
    the same parameters. ``head="logits"`` ends in ``num_actions`` logits, ``"scalar"`` in one value."""

    def __init__(self, spec: TransformerSpec, space: TokenSpace, head: str = "logits"):
        super().__init__(name="transformer_lm")
        self.spec = spec
        self.space = space
        self.head = head
        init_scale = 0.02
        self.w_init = hk.initializers.TruncatedNormal(init_scale)
        self.projection_init = hk.initializers.TruncatedNormal(init_scale / (2 * spec.num_layers) ** 0.5)

    def _layer_norm(self, name):
        return hk.LayerNorm(axis=-1, create_scale=True, create_offset=True, name=name)

    def _embed(self, ids, position_ids):
        width, window = self.spec.width, self.space.window
        x = hk.Embed(self.space.num_actions + 1, width, w_init=self.w_init, name="embed")(ids)
        if self.spec.positions == "learned":
            table = hk.get_parameter("positions", [window, width], init=self.w_init)
        else:
            table = sinusoidal_positions(window, width)
        return x + table[position_ids]

    def _qkv(self, h, layer):
        shape = h.shape[:-1] + (self.spec.num_heads, self.spec.key_size)
        return tuple(
            hk.Linear(self.spec.width, w_init=self.w_init, name=f"{part}_{layer}")(h).reshape(shape)
            for part in ("query", "key", "value")
        )

    def _attention(self, x, layer, attend):
        """One pre-LN attention block; ``attend(q, k, v) -> heads`` does the (cached or causal) mixing."""
        q, k, v = self._qkv(self._layer_norm(f"ln_attn_{layer}")(x), layer)
        heads = attend(q, k, v)
        flat = heads.reshape(heads.shape[:-2] + (self.spec.width,))
        return x + hk.Linear(self.spec.width, w_init=self.projection_init, name=f"attention_out_{layer}")(flat)

    def _mlp(self, x, layer):
        h = self._layer_norm(f"ln_mlp_{layer}")(x)
        h = hk.Linear(self.spec.mlp_multiple * self.spec.width, w_init=self.w_init, name=f"mlp_in_{layer}")(h)
        h = jax.nn.gelu(h)
        return x + hk.Linear(self.spec.width, w_init=self.projection_init, name=f"mlp_out_{layer}")(h)

    def _head(self, x):
        x = self._layer_norm("ln_final")(x)
        if self.head == "scalar":
            return hk.Linear(1, w_init=self.w_init, name="scalar")(x)[..., 0]
        return hk.Linear(self.space.num_actions, w_init=self.w_init, name="logits")(x)

    def __call__(self, inputs):
        length = inputs.shape[-1]
        if length > self.space.window:
            raise ValueError(f"inputs have {length} positions, more than the window = {self.space.window}")
        x = self._embed(inputs, jnp.arange(length))
        causal = jnp.tril(jnp.ones((length, length), dtype=bool))
        scale = self.spec.key_size**0.5

        def attend(q, k, v):  # [..., T, H, K]
            scores = jnp.einsum("...thk,...shk->...hts", q, k) / scale
            scores = jnp.where(causal, scores, -1e30)
            return jnp.einsum("...hts,...shk->...thk", jax.nn.softmax(scores, axis=-1), v)

        for layer in range(self.spec.num_layers):
            x = self._mlp(self._attention(x, layer, attend), layer)
        return self._head(x)

    def decode(self, ids, position, cache: KVCache):
        keys, values = cache
        x = self._embed(ids, position)
        visible = jnp.arange(self.space.window) <= position
        scale = self.spec.key_size**0.5
        for layer in range(self.spec.num_layers):

            def attend(q, k, v, layer=layer):  # [B, H, K]; the cache holds earlier positions
                nonlocal keys, values
                keys = keys.at[layer, :, position].set(k)
                values = values.at[layer, :, position].set(v)
                scores = jnp.einsum("bhk,bshk->bhs", q, keys[layer]) / scale
                scores = jnp.where(visible, scores, -1e30)
                return jnp.einsum("bhs,bshk->bhk", jax.nn.softmax(scores, axis=-1), values[layer])

            x = self._mlp(self._attention(x, layer, attend), layer)
        return self._head(x), KVCache(keys, values)


class Decoder(NamedTuple):
    """Incremental decoding of one network: everything a sampler needs, no config.

    ``step(params, ids [B], position, cache) -> (logits [B, A], cache)`` runs one position;
    feeding ``BOS, x_0, ...`` at positions ``0, 1, ...`` gives the network's logits row by row.
    ``empty_cache(batch_size, dtype) -> KVCache``.
    """

    step: Callable
    empty_cache: Callable
    space: TokenSpace


class LanguageModel(NamedTuple):
    """A transformer LM on a token space as pure functions.

    ``init(key, inputs) -> params`` and ``apply(params, inputs) -> logits [..., T, A]`` take
    shifted inputs (:func:`shift_right`); :meth:`logits` takes target tokens.
    """

    init: Callable
    apply: Callable
    decoder: Decoder
    space: TokenSpace

    def logits(self, params, tokens: Array) -> Array:
        """``[..., T, A]`` logits with ``logits[..., t, :] = Q(x_{<t}, .)`` for targets ``tokens``."""
        return self.apply(params, shift_right(tokens, self.space.bos))

    def init_params(self, key: Array, tokens: Array):
        """Parameters initialised on (the first row of) ``tokens [N, T]``."""
        return self.init(key, shift_right(tokens[:1], self.space.bos))


def shift_right(tokens: Array, bos: int) -> Array:
    """Network inputs ``[BOS, x_0, ..., x_{T-2}]`` for targets ``[x_0, ..., x_{T-1}]``."""
    first = jnp.full(tokens.shape[:-1] + (1,), bos, dtype=tokens.dtype)
    return jnp.concatenate([first, tokens[..., :-1]], axis=-1)


def language_model(spec: TransformerSpec, space: TokenSpace) -> LanguageModel:
    """The transformer LM of ``spec`` on ``space``: network and decoder share parameters."""
    network = hk.without_apply_rng(hk.transform(lambda inputs: _Transformer(spec, space)(inputs)))
    decode = hk.without_apply_rng(
        hk.transform(lambda ids, position, cache: _Transformer(spec, space).decode(ids, position, cache))
    )

    def cache(batch_size: int, dtype=jnp.float32) -> KVCache:
        return empty_cache(spec, space, batch_size, dtype)

    return LanguageModel(network.init, network.apply, Decoder(decode.apply, cache, space), space)


def reward_model(spec: TransformerSpec, space: TokenSpace) -> hk.Transformed:
    """The same transformer torso with a scalar head: ``apply(params, inputs) -> [..., T]``.

    Position ``t`` reads the prefix ``inputs[..., :t + 1]`` (causal), so a sequence's reward is
    the value at the position that reads its final ``EOS`` (the caller picks it).
    """
    return hk.without_apply_rng(hk.transform(lambda inputs: _Transformer(spec, space, head="scalar")(inputs)))
