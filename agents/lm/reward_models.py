"""Reward models of the LM lab: Bradley-Terry preference models, entailment classifiers and WARM.

A reward model is the lab's transformer with a scalar head (:func:`~agents.lm.transformer.reward_model`)
reading the *unshifted* sequence, so position ``t`` has read ``x_0 .. x_t`` and a sequence's
score is the output at its first ``EOS`` (:func:`sequence_scores`). It is fine-tuned from the
SFT language model: the torso's parameters are copied and one scalar head, initialised once,
replaces the logits head (:func:`init_from_lm`).

* Bradley-Terry (Bradley & Terry 1952; Ouyang et al. 2022, Eq. 1): ``P(a > b) = sigmoid(r(a) -
  r(b))``, trained by :func:`bradley_terry_loss` on pairs labelled by a golden reward through a
  Bradley-Terry draw with a fraction of flipped labels (:func:`preference_labels`).
* Entailment classifier (Roit et al. 2023): the same network with the scalar read as the logit
  of ``P(entailed | source, summary)``, trained by :func:`binary_loss`.
* WARM (Rame et al. 2024, "WARM: On the Benefits of Weight Averaged Reward Models", Eq. 1):
  ``M`` models fine-tuned from one shared initialisation with different seeds (data orders) and
  learning rates, trained in one ``vmap`` (:func:`make_reward_train`), then used as their
  weight average (:func:`agents.lm.weights.average`), their prediction ensemble
  (:func:`ensemble_scores`) or singly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Literal

import chex
import jax
import jax.numpy as jnp
import optax

from agents.lm.trainer import make_optimizer
from agents.lm.transformer import TransformerSpec, reward_model
from envs.token_mdp import EOS, TokenSpace

Array = jax.Array

LOGITS_HEAD = "transformer_lm/~_head/logits"
SCALAR_HEAD = "transformer_lm/~_head/scalar"


def first_eos(tokens: Array) -> Array:
    """``[N]`` the index of each sequence's first ``EOS`` (the last position if there is none)."""
    is_eos = jnp.asarray(tokens) == EOS
    return jnp.where(jnp.any(is_eos, -1), jnp.argmax(is_eos, -1), tokens.shape[-1] - 1)


def sequence_scores(apply: Callable, params, tokens: Array) -> Array:
    """``[N]`` a scalar-head network's output at each sequence's first ``EOS`` (it has read the
    whole sequence: the reward ``r(x, y)`` or the entailment logit)."""
    chex.assert_rank(tokens, 2)
    values = apply(params, tokens)  # [N, T]
    return jnp.take_along_axis(values, first_eos(tokens)[:, None], -1)[:, 0]


def init_from_lm(lm_params: dict, spec: TransformerSpec, space: TokenSpace, key: Array) -> dict:
    """Reward-model parameters: the SFT LM's torso and a fresh scalar head (drawn from ``key``)."""
    head = reward_model(spec, space).init(key, jnp.zeros((1, space.window), jnp.int32))[SCALAR_HEAD]
    params = {name: value for name, value in lm_params.items() if name != LOGITS_HEAD}
    if set(params) | {LOGITS_HEAD} != set(lm_params) or LOGITS_HEAD not in lm_params:
        raise ValueError(f"lm_params must be a language model's parameters (with the head {LOGITS_HEAD!r})")
    return {**params, SCALAR_HEAD: head}


def bradley_terry_loss(chosen: Array, rejected: Array) -> Array:
    """Mean ``-log sigmoid(r(chosen) - r(rejected))`` over pairs (Ouyang et al. 2022, Eq. 1)."""
    chex.assert_equal_shape([chosen, rejected])
    return jnp.mean(jax.nn.softplus(rejected - chosen))


def binary_loss(logits: Array, labels: Array) -> Array:
    """Mean binary cross-entropy of ``sigmoid(logits)`` against labels in {0, 1}."""
    chex.assert_equal_shape([logits, labels])
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, labels))


def preference_labels(key: Array, reward_a: Array, reward_b: Array, flip_fraction: float, temperature: float = 1.0):
    """``(a_preferred [N] bool, flipped [N] bool)``: a Bradley-Terry draw ``P(a > b) =
    sigmoid((r*(a) - r*(b)) / temperature)``, then exactly ``round(flip_fraction * N)`` pairs,
    chosen uniformly, get the opposite label (label noise)."""
    chex.assert_equal_shape([reward_a, reward_b])
    if not 0.0 <= flip_fraction <= 1.0:
        raise ValueError(f"flip_fraction must lie in [0, 1], got {flip_fraction}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    key_draw, key_flip = jax.random.split(key)
    n = reward_a.shape[0]
    prefer_a = jax.random.uniform(key_draw, (n,)) < jax.nn.sigmoid((reward_a - reward_b) / temperature)
    flipped = jnp.zeros((n,), bool).at[jax.random.permutation(key_flip, n)[: round(flip_fraction * n)]].set(True)
    return prefer_a ^ flipped, flipped


@dataclasses.dataclass(frozen=True)
class RewardConfig:
    """How a reward model is fine-tuned (the optimizer of :func:`agents.lm.trainer.make_optimizer`)."""

    kind: Literal["bradley_terry", "binary"] = "bradley_terry"
    """Preference pairs (Bradley-Terry) or labelled sequences (entailment classifier)."""
    steps: int = 300
    batch_size: int = 32
    learning_rate: float = 3e-4
    """Peak learning rate (a vmapped WARM run overrides it per model)."""
    warmup_steps: int = 30
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0

    def __post_init__(self):
        if self.kind not in ("bradley_terry", "binary"):
            raise ValueError(f"kind must be 'bradley_terry' or 'binary', got {self.kind!r}")
        for name in ("steps", "batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")


def reward_loss(apply: Callable, kind: str, params, batch: dict) -> Array:
    """The training loss of one batch: ``{"chosen", "rejected"}`` pairs or ``{"tokens", "labels"}``."""
    if kind == "bradley_terry":
        return bradley_terry_loss(
            sequence_scores(apply, params, batch["chosen"]), sequence_scores(apply, params, batch["rejected"])
        )
    return binary_loss(sequence_scores(apply, params, batch["tokens"]), batch["labels"])


def make_reward_train(config: RewardConfig, spec: TransformerSpec, space: TokenSpace) -> Callable:
    """``train(key, init_params, data, learning_rate) -> (params, losses [steps])``.

    ``data`` is ``{"chosen", "rejected"}`` (``[N, T]`` each) or ``{"tokens" [N, T], "labels" [N]}``;
    each step draws ``batch_size`` rows uniformly with replacement using ``key`` (the data order).
    AdamW on a warmup-cosine schedule peaking at ``learning_rate``, which may be traced, so
    ``jax.vmap(train, in_axes=(0, None, None, 0))`` fine-tunes M models from one shared
    initialisation with their own data orders and learning rates in one program (WARM).
    """
    apply = reward_model(spec, space).apply
    optimizer = make_optimizer(dataclasses.replace(config, learning_rate=1.0))  # shape of the schedule

    def train(key: Array, init_params, data: dict, learning_rate) -> tuple:
        size = next(iter(data.values())).shape[0]

        def step(carry, key):
            params, opt_state = carry
            index = jax.random.randint(key, (config.batch_size,), 0, size)
            batch = {name: value[index] for name, value in data.items()}
            loss, grads = jax.value_and_grad(lambda p: reward_loss(apply, config.kind, p, batch))(params)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            updates = jax.tree.map(lambda u: learning_rate * u, updates)
            return (optax.apply_updates(params, updates), opt_state), loss

        (params, _), losses = jax.lax.scan(step, (init_params, optimizer.init(init_params)), jax.random.split(key, config.steps))
        return params, losses

    return train


def ensemble_scores(apply: Callable, stacked_params, tokens: Array) -> Array:
    """``[N]`` the prediction ensemble: the mean of ``M`` models' scores (params stacked on axis 0)."""
    return jnp.mean(jax.vmap(lambda p: sequence_scores(apply, p, tokens))(stacked_params), 0)


def unstack(stacked_params, count: int) -> list:
    """The ``count`` parameter trees of a tree stacked on its leading axis."""
    return [jax.tree.map(lambda x, i=i: x[i], stacked_params) for i in range(count)]


def pairwise_accuracy(scores_a: Array, scores_b: Array, a_preferred: Array) -> Array:
    """Fraction of pairs ordered as labelled (a tie counts one half)."""
    agree = jnp.where(a_preferred, scores_a > scores_b, scores_b > scores_a)
    return jnp.mean(jnp.where(scores_a == scores_b, 0.5, agree.astype(jnp.float32)))
