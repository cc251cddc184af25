"""BOND: Best-of-N distillation by the Jeffreys divergence, iterated against a moving anchor (J-BOND).

Sessa et al. 2024, "BOND: Aligning LLMs with Best-of-N Distillation" (arXiv 2407.14622).

* The Best-of-N distribution (Sec. 3, Theorem 1): with ``p<=(y) = P_ref(r(Y) <= r(y))`` and
  ``p<(y) = P_ref(r(Y) < r(y))``, ``pi_BoN(y) = p<=(y)^N - p<(y)^N`` for a tie-free reward, and
  in general that reward level's mass shared in proportion to ``pi_ref`` among equal rewards
  (:func:`agents.lm.rl.best_of_n_log_probs`, exact on enumerable tasks). For a continuous reward
  ``pi_BoN ≈ N pi_ref p<=^(N-1)``, i.e. ``pi_BoN ∝ pi_ref exp((N - 1) log p<=)``: the
  KL-regularized optimum (the core's greedy step) for the reward ``log p<=`` at
  ``beta = 1 / (N - 1)``, with ``KL(pi_BoN || pi_ref) = log N - (N - 1) / N``
  (:func:`bon_kl_to_reference`) and ``E_{pi_BoN}[p<=] = N / (N + 1)``.
* The quantile estimate (Sec. 4.2): ``p̂<=(y) = (1/k) sum_i 1[r(y_i) <= r(y)]`` with ``y_i ~ pi_ref``
  (unbiased, :func:`quantile_estimate`).
* The Jeffreys objective (Sec. 4.3): ``J_b = (1 - b) KL(pi_BoN || pi) + b KL(pi || pi_BoN)``
  (:func:`jeffreys`). Its forward term's gradient is maximum likelihood on Best-of-N samples
  (:func:`forward_loss`); its backward term's is the policy gradient of the reward
  ``(N - 1) log p<=`` minus ``log(pi / pi_ref)`` (:func:`backward_advantages`, with RLOO's
  leave-one-out baseline, Ahmadian et al. 2024).
* Iterated BOND (Sec. 5): distil Best-of-``n`` of an anchor that moves to the policy; after ``M``
  anchor updates the policy is Best-of-``n^M`` of the reference (the max of ``n`` draws from a
  distribution whose CDF is ``F^m`` has CDF ``F^(n m)``). J-BOND (Sec. 6) uses ``n = 2`` anchor
  samples and an EMA anchor (:func:`jbond_config`).

:func:`make_tabular_train` trains a tabular softmax policy over the enumerated completions of
each prompt (logits ``[X, M]``, one row per prompt) with any of these objectives or with
RLOO + KL, sampling exactly as the algorithms do and evaluating exactly: a finite-bandit
rendering of the language-model problem in which every KL is a sum.
"""

from __future__ import annotations

import dataclasses
import math

import chex
import jax
import jax.numpy as jnp
import optax

from agents.lm import rl, weights
from agents.lm.rl import best_of_n_log_probs, reward_quantiles
from mdvi import kl_divergence

Array = jax.Array

__all__ = [
    "best_of_n_log_probs",
    "reward_quantiles",
    "bon_kl_to_reference",
    "bon_expected_quantile",
    "effective_n_from_quantile",
    "effective_n_from_kl",
    "jeffreys",
    "quantile_estimate",
    "log_quantile_reward",
    "forward_loss",
    "backward_advantages",
    "jbond_reward",
    "BondConfig",
    "jbond_config",
    "make_tabular_train",
]


# ---------------------------------------------------------------------------------------------
# Exact quantities
# ---------------------------------------------------------------------------------------------


def bon_kl_to_reference(n) -> Array:
    """``KL(pi_BoN || pi_ref) = log N - (N - 1) / N`` for a tie-free (continuous) reward (Sec. 3)."""
    n = jnp.asarray(n, jnp.float32)
    return jnp.log(n) - (n - 1.0) / n


def bon_expected_quantile(n) -> Array:
    """``E_{pi_BoN}[p<=] = N / (N + 1)`` for a tie-free reward (``p<=`` of the max of N uniforms)."""
    n = jnp.asarray(n, jnp.float32)
    return n / (n + 1.0)


def effective_n_from_quantile(mean_quantile) -> Array:
    """The ``N`` whose Best-of-N has ``E[p<=] = mean_quantile``: ``q / (1 - q)``."""
    q = jnp.asarray(mean_quantile)
    return q / (1.0 - q)


def effective_n_from_kl(kl, iterations: int = 60) -> Array:
    """The ``N >= 1`` with ``log N - (N - 1) / N = kl`` (bisection on ``log N``; monotone in N)."""
    kl = jnp.asarray(kl, jnp.float32)
    low, high = jnp.zeros_like(kl), jnp.full_like(kl, 30.0)

    def body(_, bounds):
        low, high = bounds
        mid = 0.5 * (low + high)
        above = bon_kl_to_reference(jnp.exp(mid)) > kl
        return jnp.where(above, low, mid), jnp.where(above, mid, high)

    low, high = jax.lax.fori_loop(0, iterations, body, (low, high))
    return jnp.exp(0.5 * (low + high))


def jeffreys(log_target: Array, log_pi: Array, b) -> Array:
    """``J_b = (1 - b) KL(target || pi) + b KL(pi || target)`` over the last axis (Sec. 4.3);
    ``b = 0`` is the forward KL, ``b = 1`` the backward KL (the core's KL)."""
    chex.assert_equal_shape([log_target, log_pi])
    forward = kl_divergence(log_target, log_pi)
    backward = kl_divergence(log_pi, log_target)
    # an exact 0 weight must not turn an infinite KL into nan
    return jnp.where(b < 1, (1.0 - b) * forward, 0.0) + jnp.where(b > 0, b * backward, 0.0)


# ---------------------------------------------------------------------------------------------
# Sample-based pieces (any policy: tabular here, a transformer's sequence log-probabilities alike)
# ---------------------------------------------------------------------------------------------


def quantile_estimate(rewards: Array, reference_rewards: Array) -> Array:
    """``[..., B]``: ``p̂<=(y) = (1/k) sum_i 1[r(y_i) <= r(y)]`` from ``reference_rewards [..., k]``
    of ``k`` samples ``y_i ~ pi_ref`` (Sec. 4.2); an unbiased estimate of ``p<=(y)``."""
    below = reference_rewards[..., None, :] <= rewards[..., :, None]
    return jnp.mean(below.astype(jnp.float32), -1)


def log_quantile_reward(estimate: Array, k: int) -> Array:
    """``log p̂<=`` floored at ``log(1 / (2k))``: ``p̂ = 0`` (the sample lost to all ``k``
    reference samples) would give ``-inf``. The paper does not say how it treats that case
    (unconfirmed); the floor is this lab's choice, half of the smallest non-zero estimate."""
    return jnp.log(jnp.maximum(estimate, 0.5 / k))


def forward_loss(log_probs_of_bon_samples: Array) -> Array:
    """``-mean log pi(y_BoN)``: the forward-KL term's gradient estimate, maximum likelihood on
    Best-of-N samples (Sec. 4.3)."""
    return -jnp.mean(log_probs_of_bon_samples)


def backward_advantages(log_quantile: Array, log_ratio: Array, n) -> Array:
    """``[B, k]`` RLOO advantages of ``R = (n - 1) log p<= - log(pi / pi_anchor)`` over the ``k``
    policy samples of each prompt. ``rl.rloo_loss(log pi, A)``'s gradient is then an estimate of
    ``grad KL(pi || pi_BoN)`` for ``pi_BoN ∝ pi_anchor p<=^(n - 1)`` (Sec. 4.3: the backward KL
    is ``KL(pi || pi_anchor) - (n - 1) E_pi[log p<=]`` up to a constant)."""
    return rl.rloo_advantages((n - 1.0) * log_quantile, log_ratio, 1.0)


JBOND_PENALTY = math.log(16.0)


def jbond_reward(rewards: Array, anchor_rewards: Array, penalty=JBOND_PENALTY) -> Array:
    """J-BOND's crude ``log p<=`` from two anchor samples (Sec. 6): ``-penalty`` when ``y`` loses
    to both (``r(y) < min(r(y'_1), r(y'_2))``), 0 otherwise. ``anchor_rewards [..., 2]`` are the
    anchor samples of each policy sample ``rewards [...]``. The value ``log 16`` and the 0 for a
    sample that beats one of the two are as we read the paper: **unconfirmed**."""
    loses = rewards < jnp.min(anchor_rewards, -1)
    return jnp.where(loses, -penalty, 0.0)


# ---------------------------------------------------------------------------------------------
# A tabular trainer over enumerated completions
# ---------------------------------------------------------------------------------------------

METHODS = ("forward", "backward", "jeffreys", "jbond", "rloo")
ANCHORS = ("fixed", "moving", "ema")


@dataclasses.dataclass(frozen=True)
class BondConfig:
    """One run of BOND (or RLOO + KL) on a tabular softmax policy over enumerated completions.

    ``method``: ``forward`` (MLE on Best-of-n samples), ``backward`` (policy gradient on
    ``(n - 1) log p̂<=`` with the KL to the anchor), ``jeffreys`` (``(1 - b)`` forward + ``b``
    backward), ``jbond`` (J-BOND, :func:`jbond_config`) or ``rloo`` (RLOO on ``r - beta log(pi /
    pi_ref)``, the baseline; ``beta`` is a run hyperparameter so a sweep is one vmap).
    """

    method: str = "jeffreys"
    n: int = 4
    """Best-of-n of the anchor (of the reference when ``anchor = "fixed"``)."""
    b: float = 0.5
    """Jeffreys weight of the backward KL (0: forward only, 1: backward only)."""
    policy_samples: int = 8
    """Policy samples per prompt and step (the backward term's RLOO group; RLOO's k)."""
    forward_samples: int = 8
    """Best-of-n samples per prompt and step (the forward term)."""
    quantile_samples: int = 16
    """k anchor samples per prompt and step for p̂<= (shared by the prompt's policy samples)."""
    anchor: str = "fixed"
    """``fixed`` (the reference), ``moving`` (set to the policy every ``anchor_period`` steps:
    iterated BOND) or ``ema`` (``anchor <- (1 - gamma) anchor + gamma pi`` in logit space)."""
    anchor_period: int = 100
    gamma: float = 0.02
    """EMA step of the anchor (J-BOND)."""
    penalty: float = JBOND_PENALTY
    """J-BOND: reward of a sample that loses to both anchor samples is ``-penalty``."""
    anchor_kl: float = 0.0
    """J-BOND: extra weight of ``KL(pi || anchor)`` on top of the backward term's own."""
    learning_rate: float = 0.05
    lr_decay: bool = False
    """Cosine decay of the Adam step to a tenth over ``steps`` (less sampling noise at the end;
    off for a moving anchor, whose later distillations need the full step)."""
    steps: int = 1000
    eval_every: int = 50

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.anchor not in ANCHORS:
            raise ValueError(f"anchor must be one of {ANCHORS}, got {self.anchor!r}")
        for name in ("n", "policy_samples", "forward_samples", "quantile_samples", "anchor_period", "steps", "eval_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.n < 2 and self.method != "rloo":
            raise ValueError(f"n must be >= 2 (Best-of-1 is the anchor itself), got {self.n}")
        if self.policy_samples < 2:
            raise ValueError(f"policy_samples must be >= 2 (leave-one-out baseline), got {self.policy_samples}")
        if not 0.0 <= self.b <= 1.0:
            raise ValueError(f"b must lie in [0, 1], got {self.b}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must lie in [0, 1], got {self.gamma}")
        if self.steps % self.eval_every:
            raise ValueError(f"steps ({self.steps}) must be a multiple of eval_every ({self.eval_every})")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.method == "jbond" and (self.n != 2 or self.quantile_samples != 2):
            raise ValueError("J-BOND uses n = 2 and quantile_samples = 2 (its two anchor samples); see jbond_config")


def jbond_config(**overrides) -> BondConfig:
    """J-BOND's settings (Sec. 6, Algorithm 2): Best-of-2 of an EMA anchor, both anchor samples
    reused for the forward term (their best) and the backward reward (:func:`jbond_reward`),
    Jeffreys weight ``b = 0.5``. **Unconfirmed** from the paper (our reading): the EMA step
    ``gamma = 0.02``, the penalty ``log 16``, no extra anchor KL (``anchor_kl = 0``); the RLOO
    baseline and the optimizer are this lab's choices."""
    settings = dict(method="jbond", n=2, b=0.5, quantile_samples=2, anchor="ema", gamma=0.02, penalty=JBOND_PENALTY)
    settings.update(overrides)
    return BondConfig(**settings)


def sample_rows(key: Array, log_p: Array, shape: tuple) -> Array:
    """``[X, *shape]`` i.i.d. draws from each row of ``log_p [X, M]`` by inverse CDF (a uniform
    searched in the row's cumulative sum): ``O(log M)`` per draw instead of the ``O(M)`` Gumbel
    noise of ``jax.random.categorical``; zero-probability entries are never drawn."""
    cdf = jnp.cumsum(jnp.exp(log_p), -1)
    u = jax.random.uniform(key, (log_p.shape[0], math.prod(shape))) * cdf[:, -1:]
    index = jax.vmap(lambda c, v: jnp.searchsorted(c, v, side="right"))(cdf, u)
    return jnp.minimum(index, log_p.shape[-1] - 1).reshape(log_p.shape[0], *shape)


def _take(values: Array, index: Array) -> Array:
    """``values [X, M]`` at ``index [X, ...]`` per row."""
    flat = index.reshape(index.shape[0], -1)
    return jnp.take_along_axis(values, flat, -1).reshape(index.shape)


def make_tabular_train(config: BondConfig):
    """``train(key, log_ref [X, M], reward [X, M], golden [X, M], hyper) -> (logits, curves)``.

    The policy ``pi(.|x) = softmax(logits[x])`` starts at ``pi_ref``; every step samples as the
    method does (Best-of-n groups of anchor samples, policy samples, k anchor samples for p̂<=),
    takes one Adam step, then moves the anchor. ``hyper = {"beta": RLOO's KL weight, "eval_n":
    the N of the evaluated pi_BoN}`` may be traced (vmap a sweep). Every ``eval_every`` steps the
    curves get exact ``kl_ref = KL(pi || pi_ref)``, ``kl_bon_forward = KL(pi_BoN || pi)``,
    ``kl_bon_backward``, ``jeffreys``, ``quantile = E_pi[p<=]`` (under ``pi_ref`` and the
    training reward), ``effective_n = q / (1 - q)``, ``reward`` and ``golden`` (expectations
    under pi), where ``pi_BoN`` is Best-of-``eval_n`` of ``pi_ref`` for ``reward``, and the policy
    itself (``log_pi [points, X, M]``); point 0 is the start. Jittable and
    vmappable over keys and tasks.
    """
    c = config
    rate = optax.cosine_decay_schedule(c.learning_rate, c.steps, 0.1) if c.lr_decay else c.learning_rate
    optimizer = optax.adam(rate)
    intervals = c.steps // c.eval_every

    def train(key, log_ref, reward, golden, hyper):
        chex.assert_equal_shape([log_ref, reward, golden])
        log_bon = best_of_n_log_probs(log_ref, reward, hyper["eval_n"])
        p_le_ref, _, _ = reward_quantiles(log_ref, reward)

        def loss_fn(theta, anchor, key):
            log_pi = jax.nn.log_softmax(theta)
            log_anchor = jax.lax.stop_gradient(jax.nn.log_softmax(anchor))
            key_fwd, key_pol, key_q = jax.random.split(key, 3)
            aux = {}
            if c.method == "rloo":
                y = sample_rows(key_pol, jax.lax.stop_gradient(log_pi), (c.policy_samples,))
                log_ratio = jax.lax.stop_gradient(_take(log_pi, y) - _take(log_ref, y))
                adv = rl.rloo_advantages(_take(reward, y), log_ratio, hyper["beta"])
                return rl.rloo_loss(_take(log_pi, y), adv), aux
            terms = []
            if c.method == "jbond":
                pairs = sample_rows(key_fwd, log_anchor, (c.policy_samples, 2))
                pair_r = _take(reward, pairs)
                best = jnp.take_along_axis(pairs, jnp.argmax(pair_r, -1)[..., None], -1)[..., 0]
                forward = forward_loss(_take(log_pi, best))
                y = sample_rows(key_pol, jax.lax.stop_gradient(log_pi), (c.policy_samples,))
                log_q = jbond_reward(_take(reward, y), pair_r, c.penalty)
                log_ratio = jax.lax.stop_gradient(_take(log_pi, y) - _take(log_anchor, y))
                adv = rl.rloo_advantages(log_q, log_ratio, 1.0 + c.anchor_kl)
                backward = rl.rloo_loss(_take(log_pi, y), adv)
                return (1.0 - c.b) * forward + c.b * backward, aux
            if c.method in ("forward", "jeffreys"):
                groups = sample_rows(key_fwd, log_anchor, (c.forward_samples, c.n))
                best = jnp.take_along_axis(groups, jnp.argmax(_take(reward, groups), -1)[..., None], -1)[..., 0]
                terms.append((1.0 - (c.b if c.method == "jeffreys" else 0.0), forward_loss(_take(log_pi, best))))
            if c.method in ("backward", "jeffreys"):
                y = sample_rows(key_pol, jax.lax.stop_gradient(log_pi), (c.policy_samples,))
                anchor_y = sample_rows(key_q, log_anchor, (c.quantile_samples,))
                estimate = quantile_estimate(_take(reward, y), _take(reward, anchor_y))
                log_ratio = jax.lax.stop_gradient(_take(log_pi, y) - _take(log_anchor, y))
                adv = backward_advantages(log_quantile_reward(estimate, c.quantile_samples), log_ratio, c.n)
                terms.append((c.b if c.method == "jeffreys" else 1.0, rl.rloo_loss(_take(log_pi, y), adv)))
            return sum(w * t for w, t in terms), aux

        def step(carry, inputs):
            theta, anchor, opt_state = carry
            key, t = inputs
            (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(theta, anchor, key)
            updates, opt_state = optimizer.update(grads, opt_state, theta)
            theta = optax.apply_updates(theta, updates)
            if c.anchor == "moving":
                anchor = jnp.where((t + 1) % c.anchor_period == 0, theta, anchor)
            elif c.anchor == "ema":
                anchor = weights.ema(theta, anchor, c.gamma)
            return (theta, anchor, opt_state), loss

        def evaluate(theta):
            log_pi = jax.nn.log_softmax(theta)
            p = jnp.exp(log_pi)
            q = jnp.mean(jnp.sum(p * p_le_ref, -1))
            return {
                "kl_ref": jnp.mean(kl_divergence(log_pi, log_ref)),
                "kl_bon_forward": jnp.mean(kl_divergence(log_bon, log_pi)),
                "kl_bon_backward": jnp.mean(kl_divergence(log_pi, log_bon)),
                "quantile": q,
                "effective_n": effective_n_from_quantile(q),
                "reward": jnp.mean(jnp.sum(p * reward, -1)),
                "golden": jnp.mean(jnp.sum(p * golden, -1)),
                "log_pi": log_pi,
            }

        def interval(carry, inputs):
            keys, ts = inputs
            carry, losses = jax.lax.scan(step, carry, (keys, ts))
            return carry, {"loss": jnp.mean(losses), **evaluate(carry[0])}

        theta = log_ref
        keys = jax.random.split(key, c.steps).reshape(intervals, c.eval_every)
        ts = jnp.arange(c.steps).reshape(intervals, c.eval_every)
        carry = (theta, theta, optimizer.init(theta))
        (theta, _, _), curves = jax.lax.scan(interval, carry, (keys, ts))
        start = evaluate(log_ref)
        curves = {k: jnp.concatenate([jnp.asarray(start.get(k, jnp.nan), v.dtype)[None], v]) for k, v in curves.items()}
        return theta, curves

    return train


# ---------------------------------------------------------------------------------------------
# J-BOND as an objective of the LM trainer (transformer policies)
# ---------------------------------------------------------------------------------------------


def jbond_objective(
    name: str, reward, prompt_length: int, num_samples: int = 4, *, b: float = 0.5, gamma: float = 0.02,
    penalty: float = JBOND_PENALTY, anchor_kl: float = 0.0,
):  # fmt: skip
    """J-BOND (Sec. 6, Algorithm 2) for a language model, as an objective of the lab's trainer.

    Extra state ``{"anchor": params, "reward": params}`` (pass the SFT parameters as the anchor).
    Each step: ``num_samples`` policy completions of each of ``config.batch_size`` training
    prompts, and two anchor completions per policy completion. The forward term is maximum
    likelihood on the better of each anchor pair (Best-of-2 of the anchor); the backward term is
    RLOO on :func:`jbond_reward` minus ``(1 + anchor_kl) log(pi / pi_anchor)``; the loss is
    ``(1 - b)`` forward + ``b`` backward. After each optimizer step the anchor takes an EMA step
    ``anchor <- (1 - gamma) anchor + gamma theta`` (:func:`agents.lm.weights.ema`). Settings as
    in :func:`jbond_config` (the same **unconfirmed** values).
    """
    from agents.lm.objectives import Batch, Objective
    from agents.lm.sampling import sample, sequence_log_probs

    def make_batch(ctx, key):
        key_data, key_policy, key_anchor = jax.random.split(key, 3)
        index = jax.random.randint(key_data, (ctx.config.batch_size,), 0, ctx.num_sequences)
        prompts = jnp.repeat(ctx.data[index, :prompt_length], num_samples, axis=0)  # [B k, P]
        params = jax.lax.stop_gradient(ctx.params)
        anchor = ctx.extra["anchor"]
        policy = sample(ctx.model.decoder, params, key_policy, prompts.shape[0], prompts=prompts)
        pairs = sample(ctx.model.decoder, anchor, key_anchor, 2 * prompts.shape[0], prompts=jnp.repeat(prompts, 2, 0))
        pair_rewards = reward(ctx.extra.get("reward"), pairs.tokens).reshape(-1, 2)
        best = jnp.take_along_axis(pairs.tokens.reshape(-1, 2, pairs.tokens.shape[-1]),
                                   jnp.argmax(pair_rewards, -1)[:, None, None], 1)[:, 0]  # fmt: skip
        scores = reward(ctx.extra.get("reward"), policy.tokens)
        log_anchor = sequence_log_probs(ctx.model.logits(anchor, policy.tokens), policy.tokens, ctx.model.space, prompt_length)
        rewards = {
            "jbond": jbond_reward(scores, pair_rewards, penalty).reshape(-1, num_samples),
            "log_ratio": (jnp.sum(policy.log_probs, -1) - log_anchor).reshape(-1, num_samples),
            "reward": scores,
            "best": best,
        }
        return Batch(policy.tokens, policy.mask, policy, rewards)

    def loss(params, model, batch, extra, hyper):
        del extra, hyper
        log_pi = sequence_log_probs(model.logits(params, batch.tokens), batch.tokens, model.space, prompt_length)
        best = batch.rewards["best"]
        log_best = sequence_log_probs(model.logits(params, best), best, model.space, prompt_length)
        advantages = rl.rloo_advantages(batch.rewards["jbond"], batch.rewards["log_ratio"], 1.0 + anchor_kl)
        backward = rl.rloo_loss(log_pi.reshape(advantages.shape), advantages)
        forward = forward_loss(log_best)
        return (1.0 - b) * forward + b * backward, {
            "reward": jnp.mean(batch.rewards["reward"]),
            "kl_anchor": jnp.mean(batch.rewards["log_ratio"]),
            "forward": forward,
            "loses_to_both": jnp.mean(batch.rewards["jbond"] < 0),
        }

    def init_extra(params, given):
        return {**given, "anchor": given.get("anchor", params)}

    def update_extra(extra, params, hyper):
        del hyper
        return {**extra, "anchor": weights.ema(params, extra["anchor"], gamma)}

    return Objective(
        name, loss, make_batch=make_batch, init_extra=init_extra, update_extra=update_extra,
        description=f"J-BOND (Sessa et al. 2024): Best-of-2 of an EMA anchor (gamma = {gamma:g}), Jeffreys b = {b:g}",
    )  # fmt: skip
