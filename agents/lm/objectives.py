"""Training objectives of the LM lab as small records in one registry.

An :class:`Objective` says how a method builds its batch (fixed data, fresh samples from some
model, rewards), what extra state it carries (teachers, references, EMA anchors, reward models:
``TrainState.extra``), how that state moves after each step, and its loss. The trainer
(:mod:`agents.lm.trainer`) only calls these; adding a method is one :func:`register` call.

A batch is built *before* the loss, outside the differentiated function (as purejaxrl keeps
its rollout apart from its loss), so sampled sequences never carry gradients.

Key convention of every builder here: the step key is split once into ``(data, sampling)``
keys; the data key draws the batch's row indices, the sampling key draws model samples.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax

from agents.lm import losses
from agents.lm.sampling import Samples, sample
from agents.lm.transformer import LanguageModel
from envs.token_mdp import sequence_mask

Array = jax.Array


class Batch(NamedTuple):
    """What a loss sees in one step (``None`` where an objective has no use for a part).

    Attributes:
      tokens: ``[B, T]`` training sequences (demonstrations).
      mask: ``[B, T]`` their :func:`envs.token_mdp.sequence_mask`.
      samples: sequences drawn from some model before the loss (no gradient through them).
      rewards: rewards of the batch, for objectives that score sequences with a reward model.
      teacher_logits: ``[B, T, A]`` a teacher's logits on ``tokens`` (distillation), computed
        before the loss.
      on_policy: scalar, 1.0 when ``tokens`` were sampled from the model being trained.
    """

    tokens: Array
    mask: Array
    samples: Samples | None = None
    rewards: Array | None = None
    teacher_logits: Array | None = None
    on_policy: Array | None = None


class BatchContext(NamedTuple):
    """Everything a batch builder may read in one step (built inside the trainer's step).

    ``config`` is the trainer's :class:`~agents.lm.trainer.LMConfig` (static: batch sizes);
    ``data [N, T]`` the training set, of which the first ``num_sequences`` rows are used;
    ``params``, ``extra`` and ``hyper`` the current state and hyperparameters.
    """

    config: Any
    model: LanguageModel
    data: Array
    num_sequences: Array
    params: Any
    extra: Any
    hyper: dict


def no_extra(params, given: dict) -> dict:
    """Default ``init_extra``: the extra state is what the caller hands in (teachers, references)."""
    del params
    return given


def keep_extra(extra, params, hyper):
    """Default ``update_extra``: the extra state does not move."""
    del params, hyper
    return extra


def data_batch(ctx: BatchContext, key: Array) -> Batch:
    """``config.batch_size`` training sequences drawn uniformly with replacement."""
    key_data, _ = jax.random.split(key)
    index = jax.random.randint(key_data, (ctx.config.batch_size,), 0, ctx.num_sequences)
    tokens = ctx.data[index]
    return Batch(tokens, sequence_mask(tokens))


def student(ctx: BatchContext):
    """The model being trained, as ``(decoder, params)`` for :func:`with_samples`."""
    return ctx.model.decoder, ctx.params


def with_samples(
    source: Callable[[BatchContext], tuple] = student,
    count: Callable[[Any], int] = lambda config: config.policy_batch_size,
) -> Callable[[BatchContext, Array], Batch]:
    """A builder: :func:`data_batch` plus ``count(config)`` sequences sampled from ``source(ctx)``,
    a ``(decoder, params)`` pair (the student by default; a teacher held in ``extra`` works alike)."""

    def build(ctx: BatchContext, key: Array) -> Batch:
        batch = data_batch(ctx, key)
        _, key_samples = jax.random.split(key)
        decoder, params = source(ctx)
        params = jax.lax.stop_gradient(params)
        return batch._replace(samples=sample(decoder, params, key_samples, count(ctx.config)))

    return build


@dataclasses.dataclass(frozen=True)
class Objective:
    """One training method.

    Attributes:
      name: its registry key (``LMConfig.objective``).
      loss: ``loss(params, model, batch, extra, hyper) -> (scalar, aux)``; ``aux`` is a dict of
        scalars logged per step (training curves).
      make_batch: ``make_batch(ctx, key) -> Batch``, run before the loss.
      hyperparameters: the names the loss reads from ``hyper`` (checked before training).
      init_extra: ``init_extra(params, given) -> extra`` at initialisation (``given``: what the
        caller passed, e.g. a teacher's parameters).
      update_extra: ``update_extra(extra, params, hyper) -> extra`` after each optimizer step
        (e.g. an EMA anchor, :func:`agents.lm.weights.ema`).
      description: one line for listings.
      configure: optional ``configure(config) -> loss``: the loss for a trainer config, for
        objectives whose loss depends on a static setting (e.g. GKD's ``config.divergence``);
        ``loss`` is then the default.
    """

    name: str
    loss: Callable
    make_batch: Callable = data_batch
    hyperparameters: tuple[str, ...] = ()
    init_extra: Callable = no_extra
    update_extra: Callable = keep_extra
    description: str = ""
    configure: Callable | None = None

    def loss_for(self, config) -> Callable:
        """The loss the trainer differentiates under ``config``."""
        return self.loss if self.configure is None else self.configure(config)


OBJECTIVES: dict[str, Objective] = {}
"""The registry: name -> :class:`Objective`."""


def register(objective: Objective, *, replace: bool = False) -> Objective:
    """Add ``objective`` to :data:`OBJECTIVES` (a name already taken needs ``replace=True``)."""
    if objective.name in OBJECTIVES and not replace:
        raise ValueError(f"objective {objective.name!r} is already registered")
    OBJECTIVES[objective.name] = objective
    return objective


def get(name: str) -> Objective:
    """The registered objective ``name``; a ``ValueError`` listing the known ones otherwise."""
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; choose one of {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name]


# ---------------------------------------------------------------------------------------------
# The lab's objectives
# ---------------------------------------------------------------------------------------------


def demonstration_aux(logits: Array, batch: Batch, hyper: dict) -> dict:
    """Per-token NLL and squared implicit reward of the demonstrations (logged by every built-in)."""
    return {
        "nll": losses.masked_mean(losses.mle_loss(logits, batch.tokens, batch.mask), batch.mask),
        "td_squared": losses.masked_mean(
            losses.td_squared(logits, batch.tokens, batch.mask, discount=hyper["discount"]), batch.mask
        ),
    }


def _mle(params, model, batch, extra, hyper):
    logits = model.logits(params, batch.tokens)
    per_token = losses.mle_loss(logits, batch.tokens, batch.mask)
    return losses.masked_mean(per_token, batch.mask), demonstration_aux(logits, batch, hyper)


def _irl_sft(params, model, batch, extra, hyper):
    """The batch mean of :func:`~agents.lm.losses.irl_sft_loss`, reduced term by term
    (``mean NLL + lam * mean r^2``: the lab's recorded runs were computed in this order)."""
    losses.check_scalar("lam", hyper["lam"], 0.0, float("inf"))
    logits = model.logits(params, batch.tokens)
    aux = demonstration_aux(logits, batch, hyper)
    return aux["nll"] + hyper["lam"] * aux["td_squared"], aux


def _iq_chi2(params, model, batch, extra, hyper):
    logits = model.logits(params, batch.tokens)
    per_token = losses.iq_learn_chi2_loss(logits, batch.tokens, batch.mask, alpha=hyper["chi2_alpha"], discount=hyper["discount"])
    return losses.masked_mean(per_token, batch.mask), demonstration_aux(logits, batch, hyper)


def _online_irl_sft(params, model, batch, extra, hyper):
    logits = model.logits(params, batch.tokens)
    samples = batch.samples
    policy_mask = samples.mask.astype(logits.dtype)
    terms = losses.online_irl_sft_loss(
        logits,
        batch.tokens,
        batch.mask,
        model.logits(params, samples.tokens),
        samples.tokens,
        policy_mask,
        lam=hyper["lam"],
        policy_fraction=hyper["policy_fraction"],
        discount=hyper["discount"],
    )
    value = losses.masked_mean(terms.expert, batch.mask) + losses.masked_mean(terms.policy, policy_mask)
    return value, demonstration_aux(logits, batch, hyper)


register(Objective("mle", _mle, hyperparameters=("discount",), description="maximum likelihood (teacher forcing)"))
register(
    Objective(
        "irl_sft",
        _irl_sft,
        hyperparameters=("lam", "discount"),
        description="IRL-SFT, Wulfmeier et al. (2024) Eq. 14: NLL + lam * squared TD residual",
    )
)
register(
    Objective(
        "iq_chi2",
        _iq_chi2,
        hyperparameters=("chi2_alpha", "discount"),
        description="offline chi^2 IQ-Learn (Garg et al. 2021) on the demonstrations",
    )
)
register(
    Objective(
        "online_irl_sft",
        _online_irl_sft,
        make_batch=with_samples(),
        hyperparameters=("lam", "policy_fraction", "discount"),
        description="online IRL-SFT: IQ-Learn's value term on demonstrations mixed with model samples",
    )
)
