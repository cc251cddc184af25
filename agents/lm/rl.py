"""KL-regularized policy gradient (RLOO), Best-of-N and the exact KL-regularized optimum.

The objective of RL from a reward ``r(x, y)`` with a reference policy (Ziegler et al. 2019;
Roit et al. 2023, Eq. 1) is ``max_pi E_x E_{y ~ pi(.|x)}[r(x, y)] - beta KL(pi(.|x) || pi_ref(.|x))``;
its maximiser is ``pi* ∝ pi_ref exp(r / beta)``, the core's KL-greedy step with temperature
``beta`` and reference ``pi_ref`` (:func:`kl_optimum`, :func:`mdvi.greedy_log_policy`).

* RLOO (Kool et al. 2019; Ahmadian et al. 2024, "Back to basics", Eq. 6): REINFORCE on the
  sequence-level regularized reward ``R = r - beta log(pi(y|x) / pi_ref(y|x))`` with the
  leave-one-out baseline over ``k`` completions of each prompt (:func:`rloo_advantages`,
  :func:`rloo_loss`), as an objective of the lab's trainer (:func:`rloo_objective`).
* Best-of-N (Stiennon et al. 2020; Beirami et al. 2024): draw ``N`` completions, keep the one
  of highest reward (:func:`best_of_n`); its exact distribution on an enumerable task is
  ``F(y)^N - F^-(y)^N`` (:func:`best_of_n_log_probs`).
"""

from __future__ import annotations

from collections.abc import Callable

import chex
import jax
import jax.numpy as jnp

from agents.lm.objectives import Batch, BatchContext, Objective
from agents.lm.sampling import sample, sequence_log_probs
from envs.token_mdp import completion_mask
from mdvi import greedy_log_policy, kl_divergence

Array = jax.Array


def kl_optimum(rewards: Array, log_ref: Array, beta) -> Array:
    """``log pi*`` with ``pi* ∝ pi_ref exp(r / beta)`` over the last axis (completions): the
    core's greedy step (:func:`mdvi.greedy_log_policy`) with temperature ``beta``."""
    return greedy_log_policy(rewards, beta, log_ref=log_ref)


def regularized_rewards(rewards: Array, log_ratio: Array, beta) -> Array:
    """``R = r - beta * log(pi(y|x) / pi_ref(y|x))`` (sequence log-ratio)."""
    return rewards - beta * log_ratio


def rloo_advantages(rewards: Array, log_ratio: Array, beta) -> Array:
    """``[B, k]``: ``R_i - mean_{j != i} R_j`` over the ``k`` completions of each prompt (``k >= 2``)."""
    chex.assert_equal_shape([rewards, log_ratio])
    k = rewards.shape[-1]
    if k < 2:
        raise ValueError(f"RLOO needs k >= 2 completions per prompt, got {k}")
    total = regularized_rewards(rewards, log_ratio, beta)
    return total - (jnp.sum(total, -1, keepdims=True) - total) / (k - 1)


def rloo_loss(log_probs: Array, advantages: Array) -> Array:
    """Surrogate ``-mean(A * log pi(y|x))`` whose gradient is the RLOO estimate of
    ``-grad (E[r] - beta KL(pi || pi_ref))`` (advantages carry no gradient)."""
    chex.assert_equal_shape([log_probs, advantages])
    return -jnp.mean(jax.lax.stop_gradient(advantages) * log_probs)


def rloo_objective(name: str, reward: Callable, prompt_length: int, num_samples: int = 4) -> Objective:
    """An :class:`~agents.lm.objectives.Objective` for the trainer: RLOO against ``reward``.

    ``reward(reward_params, tokens [N, T]) -> [N]`` is any reward (golden, a reward model, a
    weight average, an ensemble, an entailment probability); its parameters and the reference
    policy's are the extra state ``{"reference": params, "reward": params}``. Each step draws
    ``config.batch_size`` training rows, takes their first ``prompt_length`` tokens as prompts,
    samples ``num_samples`` completions of each from the current policy (key/value cache),
    scores them with the reward and with the reference, then takes the RLOO step. The
    hyperparameter ``beta`` (the KL weight) comes in through ``hyper``. Logged: the mean
    reward, the mean sequence log-ratio (a sample estimate of ``KL(pi || pi_ref)``) and the
    regularized reward.
    """

    def make_batch(ctx: BatchContext, key: Array) -> Batch:
        key_data, key_samples = jax.random.split(key)
        index = jax.random.randint(key_data, (ctx.config.batch_size,), 0, ctx.num_sequences)
        prompts = jnp.repeat(ctx.data[index, :prompt_length], num_samples, axis=0)
        params = jax.lax.stop_gradient(ctx.params)
        samples = sample(ctx.model.decoder, params, key_samples, prompts.shape[0], prompts=prompts)
        policy = jnp.sum(samples.log_probs, -1)
        reference = sequence_log_probs(
            ctx.model.logits(ctx.extra["reference"], samples.tokens), samples.tokens, ctx.model.space, prompt_length
        )
        scores = reward(ctx.extra.get("reward"), samples.tokens)
        rewards = {"reward": scores, "log_ratio": policy - reference}
        return Batch(samples.tokens, samples.mask, samples, jax.tree.map(lambda x: x.reshape(-1, num_samples), rewards))

    def loss(params, model, batch, extra, hyper):
        beta = hyper["beta"]
        log_probs = sequence_log_probs(model.logits(params, batch.tokens), batch.tokens, model.space, prompt_length)
        advantages = rloo_advantages(batch.rewards["reward"], batch.rewards["log_ratio"], beta)
        value = rloo_loss(log_probs.reshape(advantages.shape), advantages)
        total = regularized_rewards(batch.rewards["reward"], batch.rewards["log_ratio"], beta)
        return value, {
            "reward": jnp.mean(batch.rewards["reward"]),
            "kl": jnp.mean(batch.rewards["log_ratio"]),
            "regularized_reward": jnp.mean(total),
            "length": jnp.mean(completion_lengths(batch.tokens, prompt_length)),
        }

    return Objective(
        name,
        loss,
        make_batch=make_batch,
        hyperparameters=("beta",),
        description=f"RLOO (k = {num_samples}) on r - beta log(pi / pi_ref), Ahmadian et al. 2024",
    )


def best_of_n(tokens: Array, rewards: Array, n: int) -> Array:
    """``[B, T]``: of each consecutive group of ``n`` rows of ``tokens [B * n, T]``, the one of
    highest reward (the first of the group on a tie)."""
    chex.assert_rank([tokens, rewards], [2, 1])
    if tokens.shape[0] % n:
        raise ValueError(f"tokens must hold groups of n = {n} rows, got {tokens.shape[0]} rows")
    groups = tokens.reshape(-1, n, tokens.shape[-1])
    best = jnp.argmax(rewards.reshape(-1, n), -1)
    return jnp.take_along_axis(groups, best[:, None, None], 1)[:, 0]


def reward_quantiles(log_probs: Array, rewards: Array) -> tuple[Array, Array, Array]:
    """``(p_le, p_lt, level)`` of every completion (last axis) under ``p = exp(log_probs)``.

    ``p_le(y) = P(r(Y) <= r(y))``, ``p_lt(y) = P(r(Y) < r(y))`` and ``level(y) = P(r(Y) = r(y))``
    (BOND, Sessa et al. 2024, Sec. 3: the quantiles ``p<=`` and ``p<``). Sort-based, ``O(M log M)``
    per row, so a million completions cost a sort; ``level`` is summed over each tie group
    directly (not as ``p_le - p_lt``), which keeps it exact for tiny masses.
    """
    chex.assert_equal_shape([log_probs, rewards])
    p = jnp.exp(log_probs)
    order = jnp.argsort(rewards, axis=-1, stable=True)
    r_sorted = jnp.take_along_axis(rewards, order, -1)
    p_sorted = jnp.take_along_axis(p, order, -1)
    cumulative = jnp.concatenate([jnp.zeros_like(p_sorted[..., :1]), jnp.cumsum(p_sorted, -1)], -1)
    search = {
        side: jnp.vectorize(lambda a, v, side=side: jnp.searchsorted(a, v, side=side), signature="(m),(n)->(n)")
        for side in ("left", "right")
    }
    first = search["left"](r_sorted, r_sorted)  # sorted index of each tie group's first member
    size = r_sorted.shape[-1]
    group_sum = jnp.vectorize(
        lambda values, ids: jax.ops.segment_sum(values, ids, num_segments=size)[ids], signature="(m),(m)->(m)"
    )
    level_sorted = group_sum(p_sorted, first)
    inverse = jnp.argsort(order, axis=-1)
    level = jnp.take_along_axis(level_sorted, inverse, -1)
    p_le = jnp.clip(jnp.take_along_axis(cumulative, search["right"](r_sorted, rewards), -1), 0.0, 1.0)
    p_lt = jnp.clip(jnp.take_along_axis(cumulative, search["left"](r_sorted, rewards), -1), 0.0, 1.0)
    return p_le, p_lt, level


def best_of_n_log_probs(log_probs: Array, rewards: Array, n) -> Array:
    """Exact log-distribution of Best-of-``n`` over enumerated completions (last axis).

    With ``F(y) = P(r(Y) <= r(y))`` and ``F^-(y) = P(r(Y) < r(y))`` under ``p = exp(log_probs)``,
    ``P_BoN(y) = (F(y)^n - F^-(y)^n) p(y) / P(r(Y) = r(y))``: the reward level's Best-of-n mass
    shared in proportion to ``p`` among equal rewards (which is what :func:`best_of_n`'s
    first-index tie break gives on i.i.d. draws). Without ties this is ``F(y)^n - F^-(y)^n``.
    Computed in the form of BOND's Theorem 1 (Sessa et al. 2024, Eq. 1),
    ``p(y) F^(n-1) sum_{i<n} (F^- / F)^i``, with the geometric sum as
    ``expm1(n log a) / expm1(log a)``, ``log a = log1p(-level / F)``: no cancellation of
    ``F^n - F^-^n`` when a completion's mass is tiny. ``n`` may be traced.
    """
    p_le, _, level = reward_quantiles(log_probs, rewards)
    safe_le = jnp.where(level > 0, p_le, 1.0)
    log_a = jnp.log1p(-jnp.clip(level / safe_le, 0.0, 1.0))  # log(F^- / F) <= 0
    safe = jnp.where(log_a < 0, log_a, -1.0)
    geometric = jnp.where(log_a < 0, jnp.expm1(n * safe) / jnp.expm1(safe), n)  # sum_{i<n} a^i (n when a = 1)
    return jnp.where(level > 0, log_probs + (n - 1) * jnp.log(safe_le) + jnp.log(geometric), -jnp.inf)


def enumerated_log_probs(model, params, completions: Array, prompt_length: int) -> Array:
    """``[X, M]`` exact ``log pi(y | x)`` of all enumerated completions ``[X, M, T]``
    (:func:`envs.alignment.enumerate_completions`) under a language model's sampling distribution."""
    X, M, T = completions.shape
    flat = completions.reshape(X * M, T)
    return sequence_log_probs(model.logits(params, flat), flat, model.space, prompt_length).reshape(X, M)


def exact_kl(log_p: Array, log_q: Array) -> Array:
    """``[X]`` exact ``KL(p(.|x) || q(.|x))`` over enumerated completions (the core's KL)."""
    return kl_divergence(log_p, log_q)


def completion_lengths(tokens: Array, prompt_length: int) -> Array:
    """``[N]`` regular tokens in each completion."""
    mask = completion_mask(tokens, prompt_length)
    return jnp.sum(mask, -1) - 1.0
