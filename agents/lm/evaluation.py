"""Evaluation of language models against an exact oracle (:mod:`envs.token_mdp`).

With the oracle's exact likelihoods as ground truth:
  * quality: the oracle's log-likelihood per token of model samples, and the model's
    log-likelihood per token of held-out oracle data;
  * diversity: the model's per-token entropy along its samples, distinct-n, Self-BLEU and the
    fraction of samples that copy a training sequence (:mod:`agents.lm.metrics`);
  * the Spearman correlation of the recovered reward ``Q(s_t, a_t) - gamma V(s_{t+1})`` with the
    oracle's ``log p(a_t | s_t)`` on held-out data (:func:`reward_correlation`, not invariant to
    potential shaping), and the shaping-invariant EPIC distance between the two
    (:func:`epic_distance`, :func:`recovered_reward_distance`).

EPIC on token-level MDPs (Gleave et al. 2021, "Quantifying Differences in Reward Functions",
Sec. 4: the canonically shaped reward and the EPIC pseudometric). Transitions are
deterministic and the states form a prefix tree, so a per-token reward ``r(s_t, a_t)`` and its
shaped copy ``r + gamma Phi(s_{t+1}) - Phi(s_t)`` (``Phi = 0`` on terminal states, as policy
invariance requires: Ng et al. 1999) have discounted returns ``R(x, y) = sum_t gamma^t r`` that
differ by ``-Phi(x)``, a constant per prompt (the root state). EPIC's canonicalisation
``C(R)(x, y) = R(x, y) - E_{Y ~ D(.|x)} R(x, Y)`` removes exactly that (for deterministic
transitions its ``E[gamma R(s', A, S') - gamma R(S, A, S')]`` terms reduce to the expectation
over completions of the same root), and the distance is the Pearson distance
``sqrt((1 - rho) / 2)`` of the canonical returns under a coverage distribution, so it is 0
between a reward and any shaped (or positively rescaled) copy of it. On enumerable tasks it is
computed exactly over all completions; on the lab's oracles over held-out sequences.

For distillation (:func:`distillation_evaluator`), the golden and proxy metrics of teacher
hacking: sequence- and token-level KL of the oracle and of the teacher to the student.

The device-side parts (:func:`curve_evaluator`, :func:`final_evaluator`) are jittable and
vmappable over models; the set metrics (:func:`sample_set_metrics`, :func:`oracle_reference`)
are host-side NumPy.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from agents.lm import distill, losses, metrics
from agents.lm.sampling import sample, window_log_policy
from agents.lm.transformer import LanguageModel
from envs import token_mdp

Array = jax.Array


def heldout_nll(model: LanguageModel, params, heldout: Array) -> Array:
    """The model's negative log-likelihood per token of ``heldout [N, T]``."""
    mask = token_mdp.sequence_mask(heldout)
    return losses.masked_mean(losses.mle_loss(model.logits(params, heldout), heldout, mask), mask)


def curve_evaluator(model: LanguageModel, oracle: token_mdp.TokenOracle, heldout: Array, num_samples: int) -> Callable:
    """``evaluate(params, key) -> {heldout_nll, sample_quality, sample_entropy}`` for training curves:
    held-out NLL per token, and the oracle log-likelihood and model entropy per token of
    ``num_samples`` samples at temperature 1."""

    def evaluate(params, key):
        samples = sample(model.decoder, params, key, num_samples)
        sample_scores = token_mdp.score(oracle, samples.tokens)
        return {
            "heldout_nll": heldout_nll(model, params, heldout),
            "sample_quality": losses.masked_mean(sample_scores.step_log_probs, samples.mask),
            "sample_entropy": losses.masked_mean(samples.entropy, samples.mask),
        }

    return evaluate


class SampleSets(NamedTuple):
    """Model samples scored by the oracle, one set per temperature (``[K, N, T]`` each)."""

    tokens: Array
    oracle_log_probs: Array
    entropy: Array
    mask: Array


class FinalEvaluation(NamedTuple):
    """:func:`final_evaluator`'s output for one model."""

    samples: SampleSets
    reward: Array
    """``[N_heldout, T]`` recovered reward on the held-out data."""
    heldout_nll: Array


def final_evaluator(
    model: LanguageModel,
    oracle: token_mdp.TokenOracle,
    heldout: Array,
    temperatures: Sequence[float],
    num_samples: int,
    discount=1.0,
) -> Callable:
    """``evaluate(params, key) -> FinalEvaluation``: ``num_samples`` samples at each temperature
    (key ``i`` of ``split(key, K)`` for temperature ``i``), and the recovered reward and NLL on
    the held-out data."""
    temperatures = jnp.asarray(temperatures, dtype=jnp.float32)
    heldout_mask = token_mdp.sequence_mask(heldout)

    def evaluate(params, key):
        def per_temperature(temperature, key):
            samples = sample(model.decoder, params, key, num_samples, temperature)
            scores = token_mdp.score(oracle, samples.tokens)
            return SampleSets(samples.tokens, scores.step_log_probs, samples.entropy, samples.mask)

        sets = jax.vmap(per_temperature)(temperatures, jax.random.split(key, temperatures.shape[0]))
        logits = model.logits(params, heldout)
        reward = losses.recovered_reward(logits, heldout, heldout_mask, discount=discount)
        return FinalEvaluation(sets, reward, heldout_nll(model, params, heldout))

    return evaluate


def sequence_set(tokens) -> set[tuple[int, ...]]:
    """The distinct sequences of ``tokens [N, T]`` (without ``EOS``), for copy rates."""
    return {tuple(s) for s in token_mdp.strip(np.asarray(tokens))}


def sample_set_metrics(tokens, oracle_log_probs, entropy, mask, *, bleu_order: int = 4, training_set: set | None = None) -> dict:
    """Quality and diversity of one set of samples ``[N, T]`` (host side).

    ``quality`` and ``entropy`` are per-token means over real tokens; ``copy_rate`` is the
    fraction of samples found in ``training_set`` (:func:`sequence_set`; NaN without one).
    """
    mask = np.asarray(mask)
    sequences = token_mdp.strip(np.asarray(tokens))
    copies = [tuple(x) in training_set for x in sequences] if training_set is not None else [math.nan]
    return {
        "quality": float((np.asarray(oracle_log_probs) * mask).sum() / mask.sum()),
        "entropy": float((np.asarray(entropy) * mask).sum() / mask.sum()),
        "self_bleu": metrics.self_bleu(sequences, bleu_order),
        "distinct_2": metrics.distinct_n(sequences, 2),
        "distinct_3": metrics.distinct_n(sequences, 3),
        "copy_rate": float(np.mean(copies)),
    }


def oracle_reference(heldout, heldout_scores: token_mdp.OracleScores, *, bleu_order: int = 4, num_sequences: int) -> dict:
    """The oracle's own quality, entropy and diversity, on (the first ``num_sequences`` of) held-out data."""
    mask = np.asarray(heldout_scores.mask)
    all_sequences = token_mdp.strip(np.asarray(heldout))
    sequences = all_sequences[:num_sequences]
    return {
        "quality": float(np.asarray(heldout_scores.step_log_probs).sum() / mask.sum()),
        "entropy": float(np.asarray(heldout_scores.entropy).sum() / mask.sum()),
        "self_bleu": metrics.self_bleu(sequences, bleu_order),
        "distinct_2": metrics.distinct_n(sequences, 2),
        "distinct_3": metrics.distinct_n(sequences, 3),
        "mean_length": float(np.mean([len(s) for s in all_sequences])),
    }


def reward_correlation(reward, heldout_scores: token_mdp.OracleScores) -> float:
    """Spearman correlation of a recovered reward with the oracle's ``log p(a_t | s_t)`` on real tokens."""
    return metrics.reward_correlation(reward, np.asarray(heldout_scores.step_log_probs), np.asarray(heldout_scores.mask))


def discounted_returns(per_token, mask, discount=1.0) -> np.ndarray:
    """``[N]`` ``sum_t gamma^t r_t`` over the real positions (``mask > 0``) of per-token rewards ``[N, T]``."""
    per_token, mask = np.asarray(per_token, np.float64), np.asarray(mask) > 0
    if per_token.shape != mask.shape:
        raise ValueError(f"per_token and mask must have the same shape, got {per_token.shape} and {mask.shape}")
    powers = float(discount) ** np.arange(per_token.shape[-1])
    return np.sum(np.where(mask, per_token * powers, 0.0), -1)


def canonical_returns(returns, canonical=None) -> np.ndarray:
    """EPIC's canonically shaped returns ``R(x, y) - E_{Y ~ D(.|x)} R(x, Y)`` for ``returns [X, M]``
    (prompts x completions); ``canonical [X, M]`` holds the weights of ``D(.|x)`` (uniform by default)."""
    returns = np.asarray(returns, np.float64)
    weights = np.ones_like(returns) if canonical is None else np.asarray(canonical, np.float64)
    if weights.shape != returns.shape or returns.ndim != 2:
        raise ValueError(f"returns and canonical must both be [X, M], got {returns.shape} and {weights.shape}")
    weights = weights / weights.sum(-1, keepdims=True)
    return returns - np.sum(weights * returns, -1, keepdims=True)


def epic_distance(returns_a, returns_b, coverage=None, canonical=None) -> float:
    """Shaping-invariant EPIC distance ``sqrt((1 - rho) / 2)`` in [0, 1] between two rewards given by
    their returns ``[X, M]`` on the same (prompt, completion) pairs (see the module docstring).

    ``coverage [X, M]``: weights of the pairs in the Pearson correlation ``rho`` (uniform by
    default); ``canonical [X, M]``: the canonicalisation's ``D(.|x)`` (the coverage's
    conditional by default). NaN if either canonical return is constant.
    """
    returns_a, returns_b = np.atleast_2d(np.asarray(returns_a, np.float64)), np.atleast_2d(np.asarray(returns_b, np.float64))
    if returns_a.shape != returns_b.shape:
        raise ValueError(f"returns_a and returns_b must have the same shape, got {returns_a.shape} and {returns_b.shape}")
    weights = np.ones_like(returns_a) if coverage is None else np.atleast_2d(np.asarray(coverage, np.float64))
    if weights.shape != returns_a.shape or np.any(weights < 0) or not np.all(np.isfinite(weights)):
        raise ValueError(f"coverage must be finite non-negative weights of shape {returns_a.shape}")
    canonical = weights if canonical is None else canonical
    a, b = canonical_returns(returns_a, canonical).ravel(), canonical_returns(returns_b, canonical).ravel()
    w = weights.ravel() / weights.sum()
    a, b = a - np.sum(w * a), b - np.sum(w * b)
    variance_a, variance_b = np.sum(w * a * a), np.sum(w * b * b)
    scale = max(np.max(np.abs(a)), np.max(np.abs(b)), 1e-300)
    if variance_a <= (1e-12 * scale) ** 2 or variance_b <= (1e-12 * scale) ** 2:
        return math.nan
    rho = np.clip(np.sum(w * a * b) / math.sqrt(variance_a * variance_b), -1.0, 1.0)
    return float(math.sqrt((1.0 - rho) / 2.0))


def recovered_reward_distance(reward, heldout_scores: token_mdp.OracleScores, discount=1.0) -> float:
    """EPIC distance between a recovered per-token reward ``[N, T]`` and the oracle's
    ``log p(a_t | s_t)`` on held-out sequences (one root: the unprompted oracle; coverage and
    canonical distribution the held-out sample)."""
    mask = np.asarray(heldout_scores.mask)
    recovered = discounted_returns(reward, mask, discount)
    golden = discounted_returns(heldout_scores.step_log_probs, mask, discount)
    return epic_distance(recovered[None], golden[None])


def value_at_quality(quality, values, target: float) -> float:
    """``values`` along one model's temperature curve, interpolated where its ``quality`` equals
    ``target`` (NaN outside the curve's range)."""
    quality, values = np.asarray(quality, dtype=np.float64), np.asarray(values, dtype=np.float64)
    order = np.argsort(quality)
    quality, values = quality[order], values[order]
    if target < quality[0] or target > quality[-1]:
        return math.nan
    return float(np.interp(target, quality, values))


# ---------------------------------------------------------------------------------------------
# Distillation: golden and proxy metrics (Tiapkin et al. 2025, arXiv 2502.02671, Sec. 3)
# ---------------------------------------------------------------------------------------------


def completion_log_likelihood(model: LanguageModel, params, tokens: Array, mask: Array) -> Array:
    """``[N]`` a model's exact ``log pi(y | x)`` of the masked positions (its window-restricted
    sampling distribution, :func:`agents.lm.sampling.window_log_policy`)."""
    log_policy = window_log_policy(model.logits(params, tokens), model.space)
    taken = jnp.take_along_axis(log_policy, tokens[..., None], axis=-1)[..., 0]
    return jnp.sum(jnp.where(mask > 0, taken, 0.0), axis=-1)


class DistillationReference(NamedTuple):
    """Fixed held-out completions and their exact scores, shared by every evaluation.

    ``oracle_tokens`` are oracle completions of held-out prompts (golden metric), with the
    oracle's ``log p*(y | x)`` and next-token log-probabilities along them; ``teacher_tokens``
    are teacher completions of the same prompts (proxy metric), with ``log T(y | x)`` and the
    teacher's next-token log-probabilities; ``prompts`` the held-out prompts for student samples.
    """

    oracle_tokens: Array
    oracle_mask: Array
    oracle_log_likelihood: Array
    oracle_log_probs: Array
    teacher_tokens: Array
    teacher_mask: Array
    teacher_log_likelihood: Array
    teacher_log_probs: Array
    prompts: Array


def distillation_reference(
    oracle: token_mdp.TokenOracle, teacher: LanguageModel, teacher_params, prompts: Array, key: Array
) -> DistillationReference:
    """Draw one oracle and one teacher completion per held-out prompt and score them exactly."""
    key_oracle, key_teacher = jax.random.split(key)
    prompt_length = prompts.shape[-1]
    oracle_tokens = token_mdp.sample_completions(oracle, key_oracle, prompts)
    oracle_mask = token_mdp.completion_mask(oracle_tokens, prompt_length)
    teacher_samples = sample(teacher.decoder, teacher_params, key_teacher, prompts.shape[0], prompts=prompts)
    teacher_log_probs = window_log_policy(teacher.logits(teacher_params, teacher_samples.tokens), teacher.space)
    return DistillationReference(
        oracle_tokens,
        oracle_mask,
        token_mdp.conditional_log_likelihood(oracle, oracle_tokens, prompt_length),
        token_mdp.score(oracle, oracle_tokens).log_probs,
        teacher_samples.tokens,
        teacher_samples.mask,
        completion_log_likelihood(teacher, teacher_params, teacher_samples.tokens, teacher_samples.mask),
        teacher_log_probs,
        prompts,
    )


def distillation_evaluator(
    student: LanguageModel,
    oracle: token_mdp.TokenOracle,
    teacher: LanguageModel,
    teacher_params,
    reference: DistillationReference,
    num_samples: int = 0,
) -> Callable:
    """``evaluate(params, key) -> {name: scalar}``, jittable and vmappable over students:

    * ``golden_seq = E_x KL(p*(.|x) || S(.|x))`` at sequence level (nats per completion):
      Monte Carlo over the reference's oracle completions with exact log-probabilities of
      both; ``golden_token``: the exact per-step ``KL(p*(.|prefix) || S(.|prefix))`` averaged
      per token along the same completions;
    * ``proxy_seq`` and ``proxy_token``: the same against the teacher, over its completions;
    * with ``num_samples > 0``, student completions of the first ``num_samples`` held-out
      prompts: ``teacher_loglik`` and ``oracle_loglik`` (per token) and the student's exact
      per-token ``entropy`` along them.
    """
    ref = reference

    def evaluate(params, key):
        oracle_policy = window_log_policy(student.logits(params, ref.oracle_tokens), student.space)
        teacher_policy = window_log_policy(student.logits(params, ref.teacher_tokens), student.space)

        def sequence_log_likelihood(policy, tokens, mask):
            taken = jnp.take_along_axis(policy, tokens[..., None], axis=-1)[..., 0]
            return jnp.sum(jnp.where(mask > 0, taken, 0.0), axis=-1)

        out = {
            "golden_seq": jnp.mean(
                ref.oracle_log_likelihood - sequence_log_likelihood(oracle_policy, ref.oracle_tokens, ref.oracle_mask)
            ),
            "golden_token": losses.masked_mean(
                distill.token_divergence(ref.oracle_log_probs, oracle_policy, ref.oracle_mask, "kl"), ref.oracle_mask
            ),
            "proxy_seq": jnp.mean(
                ref.teacher_log_likelihood - sequence_log_likelihood(teacher_policy, ref.teacher_tokens, ref.teacher_mask)
            ),
            "proxy_token": losses.masked_mean(
                distill.token_divergence(ref.teacher_log_probs, teacher_policy, ref.teacher_mask, "kl"), ref.teacher_mask
            ),
        }
        if num_samples:
            samples = sample(student.decoder, params, key, num_samples, prompts=ref.prompts[:num_samples])
            teacher_ll = completion_log_likelihood(teacher, teacher_params, samples.tokens, samples.mask)
            oracle_scores = token_mdp.score(oracle, samples.tokens)
            tokens = jnp.maximum(jnp.sum(samples.mask), 1.0)
            out["teacher_loglik"] = jnp.sum(teacher_ll) / tokens
            out["oracle_loglik"] = jnp.sum(jnp.where(samples.mask > 0, oracle_scores.step_log_probs, 0.0)) / tokens
            out["entropy"] = losses.masked_mean(samples.entropy, samples.mask)
        return out

    return evaluate


def student_samples(student: LanguageModel, params, key: Array, prompts: Array):
    """Student completions of ``prompts`` (for host-side diversity metrics)."""
    return sample(student.decoder, params, key, prompts.shape[0], prompts=prompts)
