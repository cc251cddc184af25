"""The LM trainer: one loop for every registered objective (:mod:`agents.lm.objectives`).

``make_train(config, space)`` returns a pure ``train(key, tokens, hyper=None)``: jittable end to
end (one ``lax.scan`` over steps) and ``vmap``-able over seeds (keys), datasets and the
hyperparameter pytree ``hyper`` (a dict of scalars such as ``lam``, as optax's
``inject_hyperparams`` holds them), so a sweep over ``lam`` runs as one compiled program.
Token conventions are those of :mod:`envs.token_mdp` (``EOS = 0`` ends a sequence and pads it).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from agents.lm import objectives
from agents.lm.losses import check_scalar
from agents.lm.transformer import TransformerSpec, language_model
from envs.token_mdp import TokenSpace, validate_tokens
from mdvi import get_divergence

Array = jax.Array

HYPERPARAMETER_RANGES = {
    "lam": (0.0, math.inf, False),
    "discount": (0.0, 1.0, False),
    "chi2_alpha": (0.0, math.inf, True),
    "policy_fraction": (0.0, 1.0, False),
    "lmbda": (0.0, 1.0, False),
}
"""name -> (low, high, low end open) of the lab's hyperparameters, checked on concrete values."""


@dataclasses.dataclass(frozen=True)
class LMConfig:
    """A transformer language model and how it is trained (its token space comes from the task)."""

    model: TransformerSpec = TransformerSpec()
    """The transformer's architecture."""
    objective: str = "irl_sft"
    """A registered objective (agents/lm/objectives.py): mle, irl_sft, iq_chi2, online_irl_sft, gkd, seq_kd."""
    lam: float = 0.1
    """IRL-SFT weight of the squared TD residual (0 = MLE)."""
    discount: float = 1.0
    """gamma of the token-level MDP."""
    chi2_alpha: float = 0.5
    """alpha of the chi^2 IQ-Learn loss."""
    policy_fraction: float = 0.1
    """Online IRL-SFT: mix ratio of model samples in the value term."""
    lmbda: float = 0.0
    """Distillation (gkd): probability that a step's completions are sampled from the student."""
    divergence: str = "kl"
    """Distillation (gkd): token-level D(teacher || student), any name of mdvi.get_divergence
    ("kl" forward KL, "reverse_kl", "jsd:0.1", ...)."""
    distill_source: str = "data"
    """Distillation: completions when not on-policy: "data" (the fixed training set) or "teacher"
    (fresh teacher samples of the training set's prompts every step)."""
    teacher: TransformerSpec | None = None
    """Distillation: the teacher's architecture (its parameters go in TrainState.extra["teacher"])."""
    prompt_length: int = 0
    """Leading prompt positions of every training sequence (envs/token_mdp.py prompted tasks);
    losses count the completion only. 0: unprompted."""
    learning_rate: float = 1e-3
    """Peak AdamW learning rate (linear warmup, then cosine decay to a tenth)."""
    warmup_steps: int = 100
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    batch_size: int = 64
    """Training sequences per step."""
    steps: int = 2000
    """Optimizer steps."""
    eval_every: int = 250
    """Steps between two points of the training curves (steps must be a multiple of it)."""

    def __post_init__(self):
        objectives.get(self.objective)
        for name in ("batch_size", "steps", "eval_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.steps % self.eval_every:
            raise ValueError(f"steps ({self.steps}) must be a multiple of eval_every ({self.eval_every})")
        if not (self.lam >= 0 and math.isfinite(self.lam)):
            raise ValueError(f"lam must be finite and >= 0, got {self.lam}")
        check_hyperparameters(self.hyperparameters())
        get_divergence(self.divergence)  # ValueError listing the known names
        if self.distill_source not in ("data", "teacher"):
            raise ValueError(f"distill_source must be 'data' or 'teacher', got {self.distill_source!r}")
        if not isinstance(self.prompt_length, int) or self.prompt_length < 0:
            raise ValueError(f"prompt_length must be a non-negative integer, got {self.prompt_length!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")

    def hyperparameters(self) -> dict:
        """The hyperparameter pytree the trainer takes (override or vmap any entry)."""
        return {name: getattr(self, name) for name in HYPERPARAMETER_RANGES}

    @property
    def policy_batch_size(self) -> int:
        """Model samples per step of an objective that samples (static: it fixes a shape)."""
        return max(1, round(self.policy_fraction * self.batch_size))


def check_hyperparameters(hyper: dict, required: tuple[str, ...] = ()) -> None:
    """``ValueError`` for a missing required entry or a concrete value out of its range."""
    missing = [name for name in required if name not in hyper]
    if missing:
        raise ValueError(f"hyperparameters {', '.join(missing)} are missing (given: {', '.join(hyper)})")
    for name, value in hyper.items():
        if name in HYPERPARAMETER_RANGES and jnp.ndim(value) == 0:
            low, high, low_open = HYPERPARAMETER_RANGES[name]
            check_scalar(name, value, low, high, low_open=low_open)


def make_optimizer(config: LMConfig) -> optax.GradientTransformation:
    """Global-norm clipping, then AdamW on a warmup-cosine schedule."""
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, config.learning_rate, min(config.warmup_steps, config.steps - 1), config.steps, config.learning_rate * 0.1
    )
    return optax.chain(
        optax.clip_by_global_norm(config.max_grad_norm),
        optax.adamw(schedule, weight_decay=config.weight_decay),
    )


class TrainState(NamedTuple):
    """Parameters, optimizer state, the objective's extra state (teachers, references, anchors),
    the run's key and the optimizer steps done. Curve interval ``i`` uses ``fold_in(key, i)``,
    so chunked runs equal one run."""

    params: Any
    opt_state: Any
    extra: Any
    key: Array
    step: Array


class TrainOutput(NamedTuple):
    """Final parameters, extra state and curves ``{name: [intervals]}`` (training-batch means
    of ``loss`` and the objective's aux over each ``eval_every`` steps, plus the evaluation's)."""

    params: Any
    extra: Any
    curves: dict


class Trainer(NamedTuple):
    """The pieces of :func:`make_train`, for callers that want a progress bar between chunks.

    ``init(key, tokens, extra=None) -> TrainState``;
    ``run(state, tokens, hyper, num_sequences, intervals) -> (TrainState, curves)`` runs
    ``intervals * eval_every`` steps (``intervals`` static). Running the chunks of a schedule
    one after the other gives the same result as one call. ``model`` is the network trained.
    """

    init: Callable
    run: Callable
    model: Any


def make_trainer(config: LMConfig, space: TokenSpace, evaluate: Callable | None = None) -> Trainer:
    """See :func:`make_train`."""
    model = language_model(config.model, space)
    objective = objectives.get(config.objective)
    loss_fn = objective.loss_for(config)
    optimizer = make_optimizer(config)

    def check(tokens):
        if tokens.ndim != 2 or tokens.shape[-1] != space.window:
            raise ValueError(f"tokens must have shape [N, window = {space.window}], got {tokens.shape}")
        if config.prompt_length >= space.window:
            raise ValueError(f"prompt_length ({config.prompt_length}) must be < window = {space.window}")
        if not isinstance(tokens, jax.core.Tracer):
            validate_tokens(tokens, space.num_actions)

    def init_state(key: Array, tokens: Array, extra: dict | None = None) -> TrainState:
        check(tokens)
        key_init, key_train = jax.random.split(key)
        params = model.init_params(key_init, tokens)
        extra = objective.init_extra(params, {} if extra is None else dict(extra))
        return TrainState(params, optimizer.init(params), extra, key_train, jnp.zeros((), jnp.int32))

    def run(state: TrainState, tokens: Array, hyper: dict | None, num_sequences, intervals: int):
        check(tokens)
        hyper = {**config.hyperparameters(), **(hyper or {})}
        check_hyperparameters(hyper, objective.hyperparameters)

        def train_step(carry, key):
            params, opt_state, extra = carry
            context = objectives.BatchContext(config, model, tokens, num_sequences, params, extra, hyper)
            batch = objective.make_batch(context, key)  # the rollout, outside the differentiated loss
            (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, model, batch, extra, hyper)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            extra = objective.update_extra(extra, params, hyper)
            return (params, opt_state, extra), {"loss": loss, **aux}

        def interval(carry, key):
            key_steps, key_eval = jax.random.split(key)
            carry, logs = jax.lax.scan(train_step, carry, jax.random.split(key_steps, config.eval_every))
            row = {name: jnp.mean(value) for name, value in logs.items()}
            if evaluate is not None:
                row.update(evaluate(carry[0], key_eval))
            return carry, row

        index = state.step // config.eval_every + jnp.arange(intervals)
        keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(state.key, index)
        carry = (state.params, state.opt_state, state.extra)
        (params, opt_state, extra), curves = jax.lax.scan(interval, carry, keys)
        step = state.step + intervals * config.eval_every
        return TrainState(params, opt_state, extra, state.key, step), curves

    return Trainer(init_state, run, model)


def make_train(config: LMConfig, space: TokenSpace, evaluate: Callable | None = None) -> Callable:
    """Build ``train(key, tokens, hyper=None, num_sequences=None, extra=None) -> TrainOutput``.

    Args:
      config: the model, objective and optimisation settings.
      space: the token space of the data (actions, window, sampling's length window).
      evaluate: optional jittable ``evaluate(params, key) -> {name: scalar}``, called every
        ``config.eval_every`` steps; its outputs join the curves.

    ``tokens`` is the training set ``[N, T]``; batches of ``config.batch_size`` sequences are
    drawn uniformly with replacement from its first ``num_sequences`` rows (all by default).
    ``hyper`` overrides entries of ``config.hyperparameters()``; it and ``num_sequences`` may be
    traced, so ``jax.vmap(train, in_axes=(0, None, 0, 0))`` trains one model per (seed,
    hyperparameter, data size) in one compiled program. ``extra`` is handed to the objective's
    ``init_extra`` (e.g. a teacher's parameters).
    """
    trainer = make_trainer(config, space, evaluate)
    intervals = config.steps // config.eval_every

    def train(key: Array, tokens: Array, hyper: dict | None = None, num_sequences=None, extra=None) -> TrainOutput:
        num_sequences = tokens.shape[0] if num_sequences is None else num_sequences
        state = trainer.init(key, tokens, extra)
        state, curves = trainer.run(state, tokens, hyper, num_sequences, intervals)
        return TrainOutput(state.params, state.extra, curves)

    return train
