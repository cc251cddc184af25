"""Knowledge distillation of language models: token-level f-divergences and the GKD sampler.

Generalized knowledge distillation (GKD; Agarwal et al. 2023, arXiv 2306.13649, Sec. 3) trains a
student ``S`` towards a teacher ``T`` with, per completion token, a divergence between the two
next-token distributions at the same prefix,

    L = E_{(x, y) ~ batch} (1 / |y|) sum_t D(T(. | x, y_{<t}) || S(. | x, y_{<t})),

summed over completion tokens and averaged per token over the batch (the masked mean). The
batch's completions come, with probability ``lmbda`` per batch, from the student itself (sampled
before the loss, no gradient through the sampling; GKD's Algorithm 1), otherwise from the data
source: a fixed data set of teacher completions or fresh teacher samples. ``lmbda = 0`` with the
forward KL is supervised KD; ``lmbda = 1`` is on-policy distillation. Sequence-level KD (Kim &
Rush 2016) is maximum likelihood on teacher samples (objective ``seq_kd``).

``D`` is any divergence of the core's registry (:func:`mdvi.get_divergence`), always evaluated as
``divergence(log_p = teacher, log_ref = student)``. For an f-divergence that is
``D_f(T || S) = sum_a S(a) f(T(a) / S(a))``, so

  * ``"kl"``: ``KL(T || S)``, the forward KL (supervised KD's token loss);
  * ``"reverse_kl"``: ``KL(S || T)``, the reverse KL (mode seeking);
  * ``"jsd:b"``: the generalized Jensen-Shannon divergence of GKD (Eq. 2),
    ``JSD(b)(T || S) = b KL(T || M) + (1 - b) KL(S || M)`` with ``M = b T + (1 - b) S``,
    *divided by* ``b (1 - b)`` (the registry's normalisation, which makes it continuous on
    ``[0, 1]``): ``jsd:0`` is ``KL(T || S)`` and ``jsd:1`` is ``KL(S || T)``;
  * any other registered f-divergence (``"js"``, ``"jeffreys"``, ``"hellinger"``, ``"alpha:1.5"``).

Mapping to TRL (``GKDTrainer.generalized_jsd_loss(student_logits, teacher_logits, beta=b)``, the
version after its mixture-weight fix): TRL's ``beta`` is this ``b`` (``beta = 0`` gives
``KL(teacher || student)``, ``beta = 1`` gives ``KL(student || teacher)``), and for ``0 < b < 1``
its per-token value is ``b (1 - b)`` times the lab's ``jsd:b`` loss (:func:`gkd_value` undoes the
normalisation); at ``b = 0`` and ``b = 1`` the two agree. TRL's ``"batchmean"`` reduction with
labels is the masked per-token mean used here.

Both models' distributions are their sampling distributions: ``softmax(logits)`` restricted to
the token space's length window (:func:`agents.lm.sampling.window_log_policy`), which is also what
the oracle's distributions satisfy, so every divergence here is finite.
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp

from agents.lm import losses
from agents.lm.objectives import Batch, BatchContext, Objective, data_batch, register
from agents.lm.sampling import sample, window_log_policy
from agents.lm.transformer import LanguageModel, language_model
from envs.token_mdp import TokenSpace, completion_mask
from mdvi import get_divergence
from mdvi.divergences import Divergence
from mdvi.f_divergences import GeneralizedJSD, JensenShannon

Array = jax.Array


def token_divergence(teacher_log_probs: Array, student_log_probs: Array, mask: Array, divergence: str | Divergence) -> Array:
    """``[B, T]`` per-token ``D(teacher(. | prefix) || student(. | prefix))``, 0 where ``mask`` is 0.

    Args:
      teacher_log_probs, student_log_probs: ``[B, T, A]`` normalised log-probabilities
        (``-inf`` allowed where both are 0).
      mask: ``[B, T]`` 1 on the tokens that count (a completion's real tokens).
      divergence: a registry name (``"kl"``, ``"reverse_kl"``, ``"jsd:0.1"``, ...) or instance.
    """
    chex.assert_rank([teacher_log_probs, student_log_probs, mask], [3, 3, 2])
    chex.assert_equal_shape([teacher_log_probs, student_log_probs])
    chex.assert_equal_shape_prefix([teacher_log_probs, mask], 2)
    values = get_divergence(divergence).divergence(teacher_log_probs, student_log_probs)
    return jnp.where(mask > 0, values, 0.0)


def distillation_loss(
    teacher_logits: Array,
    student_logits: Array,
    mask: Array,
    divergence: str | Divergence = "kl",
    *,
    space: TokenSpace | None = None,
    temperature=1.0,
) -> Array:
    """GKD's token loss ``[B, T]`` from logits (reduce with :func:`agents.lm.losses.masked_mean`).

    Both distributions are ``softmax(logits / temperature)``, restricted to the length window of
    ``space`` when one is given (the models' sampling distributions) and over all actions
    otherwise (as TRL's ``generalized_jsd_loss``, which divides both logits by its temperature).
    """
    if space is None:
        teacher = jax.nn.log_softmax(teacher_logits / temperature, axis=-1)
        student = jax.nn.log_softmax(student_logits / temperature, axis=-1)
    else:
        teacher = window_log_policy(teacher_logits, space, temperature)
        student = window_log_policy(student_logits, space, temperature)
    return token_divergence(teacher, student, mask, divergence)


def gkd_value(divergence: str | Divergence, loss):
    """GKD's (and TRL's) ``JSD(beta)`` from the lab's ``jsd:beta`` loss: ``beta (1 - beta)`` times it
    (GKD's ``JSD(1/2)`` for ``"js"``, whose scale is already textbook); other divergences unchanged."""
    divergence = get_divergence(divergence)
    if isinstance(divergence, GeneralizedJSD) and not isinstance(divergence, JensenShannon):
        beta = divergence.beta
        return loss if beta in (0.0, 1.0) else beta * (1.0 - beta) * loss
    return loss


# ---------------------------------------------------------------------------------------------
# The GKD sampler and the distillation objectives
# ---------------------------------------------------------------------------------------------


def teacher_model(config, space: TokenSpace) -> LanguageModel:
    """The teacher's network (``config.teacher``) on the task's token space."""
    if config.teacher is None:
        raise ValueError(f"objective {config.objective!r} distils a teacher: set LMConfig.teacher (its TransformerSpec)")
    return language_model(config.teacher, space)


def source_tokens(ctx: BatchContext, rows: Array, prompts: Array, key: Array) -> Array:
    """The data source's completions: the fixed ``rows`` (``distill_source="data"``) or fresh
    teacher samples of their prompts (``"teacher"``)."""
    if ctx.config.distill_source == "data":
        return rows
    teacher = teacher_model(ctx.config, ctx.model.space)
    return sample(teacher.decoder, ctx.extra["teacher"], key, rows.shape[0], prompts=prompts).tokens


def gkd_batch(ctx: BatchContext, key: Array) -> Batch:
    """GKD's sampler: ``config.batch_size`` prompts of training rows (drawn as :func:`data_batch`
    draws them); with probability ``hyper["lmbda"]`` (one coin per batch) their completions are
    sampled from the student, otherwise they come from the data source (:func:`source_tokens`).
    The teacher's logits on the chosen sequences are computed here, before the loss.

    ``lmbda = 0`` never samples the student and ``lmbda = 1`` always does (the coin is
    ``uniform[0, 1) < lmbda``). Under ``vmap`` over ``lmbda`` or seeds ``lax.cond`` computes both
    branches and selects, which changes the cost, not the batch.
    """
    rows = data_batch(ctx, key).tokens
    prompts = rows[:, : ctx.config.prompt_length]
    _, key_sampling = jax.random.split(key)
    key_coin, key_draw = jax.random.split(key_sampling)
    on_policy = jax.random.uniform(key_coin) < ctx.hyper["lmbda"]
    student = jax.lax.stop_gradient(ctx.params)
    tokens = jax.lax.cond(
        on_policy,
        lambda: sample(ctx.model.decoder, student, key_draw, rows.shape[0], prompts=prompts).tokens,
        lambda: source_tokens(ctx, rows, prompts, key_draw),
    )
    return _with_teacher(ctx, tokens, on_policy)


def seq_kd_batch(ctx: BatchContext, key: Array) -> Batch:
    """Sequence-level KD's batch: the data source's completions only (no student samples)."""
    rows = data_batch(ctx, key).tokens
    _, key_sampling = jax.random.split(key)
    _, key_draw = jax.random.split(key_sampling)
    tokens = source_tokens(ctx, rows, rows[:, : ctx.config.prompt_length], key_draw)
    return Batch(tokens, completion_mask(tokens, ctx.config.prompt_length), on_policy=jnp.zeros(()))


def _with_teacher(ctx: BatchContext, tokens: Array, on_policy: Array) -> Batch:
    teacher = teacher_model(ctx.config, ctx.model.space)
    teacher_logits = jax.lax.stop_gradient(teacher.logits(ctx.extra["teacher"], tokens))
    mask = completion_mask(tokens, ctx.config.prompt_length)
    return Batch(tokens, mask, teacher_logits=teacher_logits, on_policy=on_policy.astype(jnp.float32))


def needs_teacher(params, given: dict) -> dict:
    """``init_extra`` of the distillation objectives: the caller hands in ``{"teacher": params}``."""
    del params
    if "teacher" not in given:
        raise ValueError('distillation needs the teacher\'s parameters: pass extra={"teacher": teacher_params}')
    return dict(given)


def _gkd(params, model, batch, extra, hyper, *, divergence):
    student_logits = model.logits(params, batch.tokens)
    per_token = distillation_loss(batch.teacher_logits, student_logits, batch.mask, divergence, space=model.space)
    return losses.masked_mean(per_token, batch.mask), {"on_policy": batch.on_policy}


def _seq_kd(params, model, batch, extra, hyper):
    nll = losses.masked_mean(losses.mle_loss(model.logits(params, batch.tokens), batch.tokens, batch.mask), batch.mask)
    return nll, {"on_policy": batch.on_policy}


register(
    Objective(
        "gkd",
        functools.partial(_gkd, divergence="kl"),
        make_batch=gkd_batch,
        hyperparameters=("lmbda",),
        init_extra=needs_teacher,
        configure=lambda config: functools.partial(_gkd, divergence=config.divergence),
        description="GKD (Agarwal et al. 2023): token-level D(teacher || student) (LMConfig.divergence); "
        "student completions with probability lmbda",
    )
)
register(
    Objective(
        "seq_kd",
        _seq_kd,
        make_batch=seq_kd_batch,
        init_extra=needs_teacher,
        description="sequence-level KD (Kim & Rush 2016): MLE on teacher completions (fixed data or fresh samples)",
    )
)
