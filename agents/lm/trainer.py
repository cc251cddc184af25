"""Language-model learners on token-level MDPs: a small transformer trained with MLE or IRL-SFT.

``make_train(config)`` returns a pure ``train(key, tokens, lam=None)``: jittable end to end
(one ``lax.scan`` over steps), ``vmap``-able over seeds (keys), over datasets and over ``lam``.
Token conventions are those of :mod:`envs.token_mdp` (``EOS = 0`` ends a sequence and pads it);
the network reads the sequence shifted right behind a beginning-of-sequence id ``num_actions``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax

from agents import lm_losses
from agents.networks import empty_decoder_cache, transformer_lm, transformer_lm_decoder
from envs.token_mdp import EOS, sequence_mask
from mdvi import entropy, greedy_log_policy

Array = jax.Array
OBJECTIVES = ("mle", "irl_sft", "iq_chi2", "online_irl_sft")


@dataclasses.dataclass(frozen=True)
class LMConfig:
    """A transformer language model and how it is trained."""

    num_actions: int = 33
    """Actions including EOS (vocabulary + 1)."""
    window: int = 33
    """Positions per sequence array, T = max_length + 1."""
    min_length: int = 16
    """Sampling: EOS is not allowed before this position (generation's min_new_tokens); EOS is
    forced at the last position (max_new_tokens)."""
    num_layers: int = 2
    width: int = 64
    num_heads: int = 4
    positions: Literal["learned", "sinusoidal"] = "learned"
    objective: Literal["mle", "irl_sft", "iq_chi2", "online_irl_sft"] = "irl_sft"
    """Training loss, see agents/lm_losses.py."""
    lam: float = 0.1
    """IRL-SFT weight of the squared TD residual (0 = MLE)."""
    discount: float = 1.0
    """gamma of the token-level MDP."""
    chi2_alpha: float = 0.5
    """alpha of the chi^2 IQ-Learn loss."""
    policy_fraction: float = 0.1
    """Online IRL-SFT: mix ratio of model samples in the value term."""
    learning_rate: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    batch_size: int = 64
    steps: int = 2000
    eval_every: int = 250
    """Steps between two evaluations (steps must be a multiple of it)."""

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {self.objective!r}; choose one of {', '.join(OBJECTIVES)}")
        for name in ("num_actions", "window", "batch_size", "steps", "eval_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.num_actions < 2:
            raise ValueError(f"num_actions must be >= 2 (EOS and one token), got {self.num_actions}")
        if not 0 <= self.min_length < self.window:
            raise ValueError(f"min_length must lie in [0, window - 1 = {self.window - 1}], got {self.min_length}")
        if self.steps % self.eval_every:
            raise ValueError(f"steps ({self.steps}) must be a multiple of eval_every ({self.eval_every})")
        if not (self.lam >= 0 and math.isfinite(self.lam)):
            raise ValueError(f"lam must be finite and >= 0, got {self.lam}")
        if not 0.0 <= self.discount <= 1.0:
            raise ValueError(f"discount must lie in [0, 1], got {self.discount}")
        if not self.chi2_alpha > 0:
            raise ValueError(f"chi2_alpha must be > 0, got {self.chi2_alpha}")
        if not 0.0 <= self.policy_fraction <= 1.0:
            raise ValueError(f"policy_fraction must lie in [0, 1], got {self.policy_fraction}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")

    @property
    def bos(self) -> int:
        return self.num_actions

    @property
    def policy_batch_size(self) -> int:
        """Model samples per step of the online objective."""
        return max(1, round(self.policy_fraction * self.batch_size))


def network(config: LMConfig):
    """The config's transformer as pure ``(init, apply)`` functions."""
    return transformer_lm(
        config.num_actions,
        config.window,
        num_layers=config.num_layers,
        width=config.width,
        num_heads=config.num_heads,
        positions=config.positions,
    )


def decoder(config: LMConfig):
    """Incremental decoding ``(init, decode)`` sharing :func:`network`'s parameters."""
    return transformer_lm_decoder(
        config.num_actions,
        config.window,
        num_layers=config.num_layers,
        width=config.width,
        num_heads=config.num_heads,
        positions=config.positions,
    )


def shift_right(tokens: Array, bos: int) -> Array:
    """Network inputs ``[BOS, x_0, ..., x_{T-2}]`` for targets ``[x_0, ..., x_{T-1}]``."""
    first = jnp.full(tokens.shape[:-1] + (1,), bos, dtype=tokens.dtype)
    return jnp.concatenate([first, tokens[..., :-1]], axis=-1)


def model_logits(apply: Callable, params, tokens: Array, bos: int) -> Array:
    """``[..., T, A]`` logits, ``logits[..., t, :] = Q(x_{<t}, .)``."""
    return apply(params, shift_right(tokens, bos))


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


def sample_sequences(config: LMConfig, params, key: Array, num_sequences: int, temperature=1.0) -> Samples:
    """Ancestral sampling from ``softmax(Q / temperature)``, restricted to the length window.

    The window is the oracle's: ``EOS`` is excluded before ``config.min_length`` and forced at
    the last position. The restriction is the core's greedy step with a reference measure that
    is 0 on excluded actions (``log_ref = -inf``). Jittable; incremental decoding with a
    key/value cache (:func:`agents.networks.transformer_lm_decoder`).
    """
    window, num_actions = config.window, config.num_actions
    _, decode = decoder(config)
    is_eos = jnp.arange(num_actions) == EOS
    dtype = jax.tree.leaves(params)[0].dtype

    def body(carry, inputs):
        previous, done, cache = carry
        t, key = inputs
        logits, cache = decode(params, previous, t, cache)  # [N, A]
        allowed = jnp.where(t < config.min_length, ~is_eos, jnp.where(t == window - 1, is_eos, True))
        log_ref = jnp.broadcast_to(jnp.where(allowed, 0.0, -jnp.inf), logits.shape).astype(logits.dtype)
        log_policy = greedy_log_policy(logits, temperature, log_ref=log_ref)
        action = jax.random.categorical(key, log_policy)
        action = jnp.where(done, EOS, action).astype(jnp.int32)
        step_entropy = jnp.where(done, 0.0, entropy(log_policy))
        step_log_prob = jnp.where(done, 0.0, jnp.take_along_axis(log_policy, action[:, None], -1)[:, 0])
        return (action, done | (action == EOS), cache), (action, step_entropy, step_log_prob)

    cache = empty_decoder_cache(
        num_sequences, window, num_layers=config.num_layers, width=config.width, num_heads=config.num_heads, dtype=dtype
    )
    first = jnp.full((num_sequences,), config.bos, dtype=jnp.int32)
    done = jnp.zeros((num_sequences,), dtype=bool)
    _, (tokens, step_entropy, step_log_prob) = jax.lax.scan(
        body, (first, done, cache), (jnp.arange(window), jax.random.split(key, window))
    )
    tokens = tokens.T
    return Samples(tokens, sequence_mask(tokens), step_entropy.T, step_log_prob.T)


def make_loss(config: LMConfig):
    """``loss(params, tokens, key, lam) -> (loss, aux)`` for the config's objective.

    ``aux`` holds the batch's per-token negative log-likelihood ``nll`` and mean squared
    implicit reward ``td_squared`` (logged for every objective).
    """
    init, apply = network(config)
    del init

    def loss(params, tokens, key, lam):
        logits = model_logits(apply, params, tokens, config.bos)
        mask = sequence_mask(tokens).astype(logits.dtype)
        aux = {
            "nll": lm_losses.mle_loss(logits, tokens, mask),
            "td_squared": lm_losses.td_squared(logits, tokens, mask, discount=config.discount),
        }
        if config.objective == "mle":
            value = lm_losses.mle_loss(logits, tokens, mask)
        elif config.objective == "irl_sft":
            value = lm_losses.irl_sft_loss(logits, tokens, mask, lam=lam, discount=config.discount)
        elif config.objective == "iq_chi2":
            value = lm_losses.iq_learn_chi2_loss(logits, tokens, mask, alpha=config.chi2_alpha, discount=config.discount)
        else:
            samples = sample_sequences(config, jax.lax.stop_gradient(params), key, config.policy_batch_size)
            policy_logits = model_logits(apply, params, samples.tokens, config.bos)
            value = lm_losses.online_irl_sft_loss(
                logits,
                tokens,
                mask,
                policy_logits,
                samples.tokens,
                samples.mask.astype(logits.dtype),
                lam=lam,
                policy_fraction=config.policy_fraction,
                discount=config.discount,
            )
        return value, aux

    return loss


def make_optimizer(config: LMConfig) -> optax.GradientTransformation:
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, config.learning_rate, min(config.warmup_steps, config.steps - 1), config.steps, config.learning_rate * 0.1
    )
    return optax.chain(
        optax.clip_by_global_norm(config.max_grad_norm),
        optax.adamw(schedule, weight_decay=config.weight_decay),
    )


class TrainState(NamedTuple):
    """Parameters, optimizer state, the run's key and the number of intervals done (interval
    ``i`` uses ``fold_in(key, i)``, so chunked runs equal one run)."""

    params: dict
    opt_state: tuple
    key: Array
    intervals_done: Array


class TrainOutput(NamedTuple):
    """Final parameters and curves ``{name: [intervals]}`` (training-batch means of ``loss``,
    ``nll``, ``td_squared`` over each ``eval_every`` steps, plus the evaluation's scalars)."""

    params: dict
    curves: dict


class Trainer(NamedTuple):
    """The pieces of :func:`make_train`, for callers that want a progress bar between chunks.

    ``init(key, tokens) -> TrainState``;
    ``run(state, tokens, lam, num_sequences, intervals) -> (TrainState, curves)`` runs
    ``intervals * eval_every`` steps (``intervals`` static). Running the chunks of a schedule
    one after the other gives the same result as one call.
    """

    init: Callable
    run: Callable


def make_trainer(config: LMConfig, evaluate: Callable | None = None) -> Trainer:
    """See :func:`make_train`."""
    init, apply = network(config)
    loss_fn = make_loss(config)
    optimizer = make_optimizer(config)

    def check(tokens):
        if tokens.ndim != 2 or tokens.shape[-1] != config.window:
            raise ValueError(f"tokens must have shape [N, window = {config.window}], got {tokens.shape}")

    def init_state(key: Array, tokens: Array) -> TrainState:
        check(tokens)
        key_init, key_train = jax.random.split(key)
        params = init(key_init, shift_right(tokens[:1], config.bos))
        return TrainState(params, optimizer.init(params), key_train, jnp.zeros((), jnp.int32))

    def run(state: TrainState, tokens: Array, lam, num_sequences, intervals: int):
        check(tokens)

        def train_step(carry, key):
            params, opt_state = carry
            key_batch, key_loss = jax.random.split(key)
            index = jax.random.randint(key_batch, (config.batch_size,), 0, num_sequences)
            (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, tokens[index], key_loss, lam)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            return (params, opt_state), {"loss": loss, **aux}

        def interval(carry, key):
            key_steps, key_eval = jax.random.split(key)
            carry, logs = jax.lax.scan(train_step, carry, jax.random.split(key_steps, config.eval_every))
            row = {name: jnp.mean(value) for name, value in logs.items()}
            if evaluate is not None:
                row.update(evaluate(carry[0], key_eval))
            return carry, row

        index = state.intervals_done + jnp.arange(intervals)
        keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(state.key, index)
        (params, opt_state), curves = jax.lax.scan(interval, (state.params, state.opt_state), keys)
        return TrainState(params, opt_state, state.key, state.intervals_done + intervals), curves

    return Trainer(init_state, run)


def make_train(config: LMConfig, evaluate: Callable | None = None) -> Callable:
    """Build ``train(key, tokens, lam=None, num_sequences=None) -> TrainOutput`` (PureJaxRL style).

    Args:
      config: the model and optimisation settings.
      evaluate: optional jittable ``evaluate(params, key) -> {name: scalar}``, called every
        ``config.eval_every`` steps; its outputs join the curves.

    ``tokens`` is the training set ``[N, T]``; batches of ``config.batch_size`` sequences are
    drawn uniformly with replacement from its first ``num_sequences`` rows (all by default).
    ``lam`` overrides ``config.lam``; both it and ``num_sequences`` may be traced, so
    ``jax.vmap(train, in_axes=(0, None, 0, 0))`` trains one model per (seed, lambda, data size)
    in one compiled program.
    """
    trainer = make_trainer(config, evaluate)
    intervals = config.steps // config.eval_every

    def train(key: Array, tokens: Array, lam=None, num_sequences=None) -> TrainOutput:
        lam = config.lam if lam is None else lam
        num_sequences = tokens.shape[0] if num_sequences is None else num_sequences
        state = trainer.init(key, tokens)
        state, curves = trainer.run(state, tokens, lam, num_sequences, intervals)
        return TrainOutput(state.params, curves)

    return train
