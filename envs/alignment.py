"""Prompted tasks with golden rewards on the oracle language model (:mod:`envs.token_mdp`).

A task is a prompt distribution (oracle prefixes, disjoint train / held-out sets from
:func:`envs.token_mdp.split_prompts`) plus an exact reward ``r*(x, y)`` of a completion ``y``
given its prompt ``x``. Sequences follow :mod:`envs.token_mdp`'s conventions: ``tokens [N, T]``
holds the prompt at positions ``0 .. P - 1`` and the completion from ``P`` up to and including
its ``EOS``. A completion has between 1 and ``max_completion`` regular tokens, which is the
task's :class:`~envs.token_mdp.TokenSpace` (``min_length = P + 1``, ``window = P +
max_completion + 1``); with a small vocabulary the completions of a prompt can be enumerated
(:func:`enumerate_completions`), which makes every expectation under a policy exact.

Two tasks:

* :class:`PreferenceTask`, a hidden preference over completions (the reward that a
  Bradley-Terry reward model is to recover, Ouyang et al. 2022; WARM, Rame et al. 2024):

      r*(x, y) = (1 / S) [ sum_t v(y_t) + echo * #{t : y_t in x} ] - length * |len(y) - L0| / S,

  with ``S = max_completion``, ``v = +target_weight`` on the target tokens, ``-forbidden_weight``
  on the forbidden tokens, 0 elsewhere. Difficulty: tokens are ranked by the oracle's exact
  probability right after a prompt (the hidden-state marginal at position ``P``); the targets
  start at quantile ``difficulty`` of that ranking (0: the oracle's most frequent tokens, which
  the reference policy already emits; 1: its rarest, far from the reference), and the forbidden
  tokens are the most frequent tokens that are not targets.

* :class:`SummaryTask`, summarisation after Roit et al. (2023, "Factually consistent
  summarization via reinforcement learning with textual entailment feedback"): the prompt is a
  source of ``P`` oracle tokens, the completion a summary. Golden scores (:meth:`SummaryTask.scores`):

  - *consistency*: the fraction of summary tokens entailed by the source, where a token is
    **entailed** iff it occurs somewhere in the source (unigram entailment); a summary is
    entailed (label 1 of the entailment classifier) iff all its tokens are;
  - *informativeness*: the fraction of the source's salient tokens that the summary contains,
    the salient tokens being those at the ``num_salient`` source positions of highest oracle
    surprisal ``-log p*(x_t | x_{<t})`` (ties to the earlier position);
  - *extractiveness*: the length of the longest contiguous run of summary tokens that occurs
    contiguously in the source (tokens);
  - *length*: the number of summary tokens.

  Reference summaries (:meth:`SummaryTask.reference_summaries`) come from a noisy rule: the
  salient tokens in source order, each replaced with probability ``hallucination`` by a token
  drawn uniformly from those absent from the source, so an SFT policy trained on them is
  measurably inconsistent.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np

from envs import token_mdp
from envs.token_mdp import EOS, OracleConfig, TokenSpace

Array = jax.Array


def _check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_oracle_window(oracle: OracleConfig, prompt_length: int, max_completion: int) -> None:
    if oracle.min_length <= prompt_length or oracle.max_length != prompt_length + max_completion:
        raise ValueError(
            f"the oracle's lengths must be min_length > prompt_length = {prompt_length} (every oracle completion "
            f"has a token) and max_length = "
            f"prompt_length + max_completion = {prompt_length + max_completion}, got {oracle.min_length}-{oracle.max_length}"
        )


def task_space(oracle: OracleConfig, prompt_length: int, max_completion: int) -> TokenSpace:
    """Completions of 1 .. ``max_completion`` regular tokens after a ``prompt_length`` prompt."""
    return TokenSpace(oracle.vocab_size + 1, prompt_length + max_completion + 1, prompt_length + 1)


def completion_tokens(tokens: Array, prompt_length: int) -> tuple[Array, Array]:
    """``(y [N, T - P], real [N, T - P])``: the completion part and 1.0 on its regular tokens."""
    completion = jnp.asarray(tokens)[:, prompt_length:]
    real = token_mdp.completion_mask(tokens, prompt_length)[:, prompt_length:] * (completion != EOS)
    return completion, real


def in_prompt(tokens: Array, prompt_length: int) -> Array:
    """``[N, T - P]`` 1.0 where completion token ``y_t`` occurs in the prompt ``x``."""
    tokens = jnp.asarray(tokens)
    prompt, completion = tokens[:, :prompt_length], tokens[:, prompt_length:]
    return jnp.any(completion[:, :, None] == prompt[:, None, :], axis=-1).astype(jnp.float32)


def enumerate_completions(space: TokenSpace, prompts: Array) -> Array:
    """Every completion of every prompt: ``[num_prompts, M, T]`` (prompt, 1 .. S regular tokens,
    ``EOS`` padding), in the order of increasing length then lexicographic; ``M = sum_l V^l``."""
    prompts = np.asarray(prompts)
    P, T = prompts.shape[1], space.window
    vocab = range(1, space.num_actions)
    rows = []
    for length in range(space.min_length - P, T - P):
        for body in itertools.product(vocab, repeat=length):
            rows.append(list(body) + [EOS] * (T - P - length))
    completions = np.asarray(rows, dtype=np.int32)  # [M, T - P]
    out = np.concatenate(
        [np.repeat(prompts[:, None, :], len(rows), 1), np.broadcast_to(completions, (len(prompts),) + completions.shape)], -1
    )
    return jnp.asarray(out, jnp.int32)


def num_completions(space: TokenSpace, prompt_length: int) -> int:
    """``M``: how many completions :func:`enumerate_completions` lists per prompt."""
    V = space.num_actions - 1
    return sum(V**length for length in range(space.min_length - prompt_length, space.window - prompt_length))


def token_marginal(oracle: token_mdp.TokenOracle, position: int) -> np.ndarray:
    """``[V]`` the oracle's probability of each regular token at ``position`` given no EOS before
    (the hidden-state marginal ``initial @ transition^position`` times the emissions)."""
    belief = np.asarray(oracle.initial, np.float64)
    for _ in range(position):
        belief = belief @ np.asarray(oracle.transition, np.float64)
    return (belief @ np.asarray(oracle.emission, np.float64))[1:]


# ---------------------------------------------------------------------------------------------
# The preference task
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PreferenceConfig:
    """A hidden preference over completions (see the module docstring); ``build()`` makes it."""

    oracle: OracleConfig = OracleConfig(vocab_size=8, num_hidden=8, min_length=5, max_length=7, eos_hazard=0.3)
    """The prompt source; its lengths must be ``prompt_length .. prompt_length + max_completion``."""
    prompt_length: int = 4
    max_completion: int = 3
    num_targets: int = 2
    num_forbidden: int = 2
    difficulty: float = 0.5
    """In [0, 1]: where the targets sit in the oracle's token ranking (0 = most frequent)."""
    target_weight: float = 1.0
    forbidden_weight: float = 1.0
    echo_weight: float = 0.5
    """Per completion token that also occurs in the prompt (the reward reads the prompt)."""
    length_weight: float = 0.5
    target_length: int = 2

    def __post_init__(self):
        _check_positive_int("prompt_length", self.prompt_length)
        _check_positive_int("max_completion", self.max_completion)
        _check_oracle_window(self.oracle, self.prompt_length, self.max_completion)
        if self.num_targets < 1 or self.num_forbidden < 0 or self.num_targets + self.num_forbidden > self.oracle.vocab_size:
            raise ValueError(
                f"need num_targets >= 1, num_forbidden >= 0 and num_targets + num_forbidden <= vocab_size = "
                f"{self.oracle.vocab_size}, got {self.num_targets}, {self.num_forbidden}"
            )
        if not 0.0 <= self.difficulty <= 1.0:
            raise ValueError(f"difficulty must lie in [0, 1], got {self.difficulty}")
        for name in ("target_weight", "forbidden_weight", "echo_weight", "length_weight"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be finite, got {getattr(self, name)}")

    @property
    def space(self) -> TokenSpace:
        return task_space(self.oracle, self.prompt_length, self.max_completion)

    def build(self) -> PreferenceTask:
        oracle = self.oracle.build()
        ranking = np.argsort(-token_marginal(oracle, self.prompt_length), kind="stable") + 1  # token ids
        free = self.oracle.vocab_size - self.num_targets - self.num_forbidden
        start = self.num_forbidden + round(self.difficulty * free)
        targets = ranking[start : start + self.num_targets]
        forbidden = [t for t in ranking if t not in set(targets)][: self.num_forbidden]
        values = np.zeros(self.oracle.vocab_size + 1)
        values[targets] = self.target_weight
        values[forbidden] = -self.forbidden_weight
        return PreferenceTask(
            self, oracle, jnp.asarray(values, jnp.float32), tuple(int(t) for t in targets), tuple(int(t) for t in forbidden)
        )


@dataclasses.dataclass(frozen=True, eq=False)
class PreferenceTask:
    """A built :class:`PreferenceConfig`: the oracle, the token values and the golden reward."""

    config: PreferenceConfig
    oracle: token_mdp.TokenOracle
    token_values: Array
    """``[A]``: ``v(a)`` (0 for EOS)."""
    targets: tuple[int, ...]
    forbidden: tuple[int, ...]

    @property
    def space(self) -> TokenSpace:
        return self.config.space

    @property
    def prompt_length(self) -> int:
        return self.config.prompt_length

    def reward(self, tokens: Array) -> Array:
        """``[N]`` the golden reward ``r*(x, y)`` of each sequence (jittable)."""
        c = self.config
        completion, real = completion_tokens(tokens, c.prompt_length)
        value = jnp.sum(real * self.token_values[completion], -1)
        echo = jnp.sum(real * in_prompt(tokens, c.prompt_length), -1)
        length = jnp.sum(real, -1)
        return (value + c.echo_weight * echo - c.length_weight * jnp.abs(length - c.target_length)) / c.max_completion


# ---------------------------------------------------------------------------------------------
# The summarisation task
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SummaryConfig:
    """Summarisation with golden consistency (see the module docstring); ``build()`` makes it."""

    oracle: OracleConfig = OracleConfig(vocab_size=8, num_hidden=8, min_length=7, max_length=9, eos_hazard=0.3)
    """The source of the sources; its lengths must be ``source_length .. source_length + max_summary``."""
    source_length: int = 6
    max_summary: int = 3
    num_salient: int = 2
    """Salient source positions (highest oracle surprisal) that informativeness counts."""
    hallucination: float = 0.3
    """Per-token probability that the reference rule writes a token absent from the source."""

    def __post_init__(self):
        _check_positive_int("source_length", self.source_length)
        _check_positive_int("max_summary", self.max_summary)
        _check_oracle_window(self.oracle, self.source_length, self.max_summary)
        if not 1 <= self.num_salient <= min(self.source_length, self.max_summary):
            raise ValueError(f"num_salient must lie in [1, min(source_length, max_summary)], got {self.num_salient}")
        if not 0.0 <= self.hallucination <= 1.0:
            raise ValueError(f"hallucination must lie in [0, 1], got {self.hallucination}")
        if self.oracle.vocab_size <= self.source_length:
            raise ValueError(
                f"vocab_size ({self.oracle.vocab_size}) must exceed source_length ({self.source_length}), "
                "so that a token absent from every source exists to hallucinate"
            )

    @property
    def space(self) -> TokenSpace:
        return task_space(self.oracle, self.source_length, self.max_summary)

    def build(self) -> SummaryTask:
        return SummaryTask(self, self.oracle.build())


SCORE_NAMES = ("consistency", "entailed", "informativeness", "extractiveness", "length")


@dataclasses.dataclass(frozen=True, eq=False)
class SummaryTask:
    """A built :class:`SummaryConfig`: golden scores and the noisy reference rule."""

    config: SummaryConfig
    oracle: token_mdp.TokenOracle

    @property
    def space(self) -> TokenSpace:
        return self.config.space

    @property
    def prompt_length(self) -> int:
        return self.config.source_length

    def salient_tokens(self, sources: Array) -> Array:
        """``[N, num_salient]`` token ids at the source positions of highest oracle surprisal,
        in source order (ties to the earlier position)."""
        P, k = self.config.source_length, self.config.num_salient
        sources = jnp.asarray(sources, jnp.int32)
        padded = jnp.concatenate([sources, jnp.zeros((sources.shape[0], self.space.window - P), jnp.int32)], -1)
        surprisal = -token_mdp.score(self.oracle, padded).step_log_probs[:, :P]
        # stable descending order: larger surprisal first, earlier position on ties
        order = jnp.argsort(-surprisal, axis=-1, stable=True)[:, :k]
        positions = jnp.sort(order, axis=-1)
        return jnp.take_along_axis(sources, positions, -1)

    def scores(self, tokens: Array) -> dict[str, Array]:
        """Golden scores ``{name: [N]}`` of each (source, summary) sequence (:data:`SCORE_NAMES`)."""
        P = self.config.source_length
        tokens = jnp.asarray(tokens, jnp.int32)
        sources = tokens[:, :P]
        summary, real = completion_tokens(tokens, P)
        length = jnp.sum(real, -1)
        entailed_tokens = jnp.sum(real * in_prompt(tokens, P), -1)
        consistency = jnp.where(length > 0, entailed_tokens / jnp.maximum(length, 1), 1.0)
        salient = self.salient_tokens(sources)  # [N, k]
        distinct = jnp.ones(salient.shape, bool)
        for j in range(1, salient.shape[1]):
            distinct = distinct.at[:, j].set(jnp.all(salient[:, :j] != salient[:, j : j + 1], -1))
        covered = jnp.any((summary[:, None, :] == salient[:, :, None]) & (real[:, None, :] > 0), -1)
        informativeness = jnp.sum(covered & distinct, -1) / jnp.sum(distinct, -1)
        # longest common substring of summary and source: run[i, j] = run[i-1, j-1] + 1 on a match
        match = (summary[:, :, None] == sources[:, None, :]) & (real[:, :, None] > 0)  # [N, S+1, P]
        run = jnp.zeros((tokens.shape[0], P), jnp.int32)
        longest = jnp.zeros((tokens.shape[0],), jnp.int32)
        for i in range(match.shape[1]):
            shifted = jnp.concatenate([jnp.zeros((tokens.shape[0], 1), jnp.int32), run[:, :-1]], -1)
            run = jnp.where(match[:, i], shifted + 1, 0)
            longest = jnp.maximum(longest, run.max(-1))
        return {
            "consistency": consistency,
            "entailed": (entailed_tokens == length).astype(jnp.float32),
            "informativeness": informativeness,
            "extractiveness": longest.astype(jnp.float32),
            "length": length,
        }

    def reference_summaries(self, key: Array, sources: Array, hallucination=None) -> Array:
        """``[N, T]`` sources followed by the noisy rule's summaries (module docstring); each
        salient token is hallucinated independently with probability ``hallucination`` (the
        config's by default; may be an ``[N]`` array)."""
        P, k, A = self.config.source_length, self.config.num_salient, self.space.num_actions
        rate = self.config.hallucination if hallucination is None else hallucination
        sources = jnp.asarray(sources, jnp.int32)
        N = sources.shape[0]
        salient = self.salient_tokens(sources)
        key_flip, key_token = jax.random.split(key)
        flip = jax.random.uniform(key_flip, (N, k)) < jnp.reshape(jnp.asarray(rate), (-1, 1))
        absent = ~jnp.any(sources[:, :, None] == jnp.arange(A)[None, None, :], 1) & (jnp.arange(A) != EOS)  # [N, A]
        logits = jnp.where(absent, 0.0, -jnp.inf)[:, None, :]
        invented = jax.random.categorical(key_token, jnp.broadcast_to(logits, (N, k, A)))
        summary = jnp.where(flip, invented, salient)
        pad = jnp.zeros((N, self.space.window - P - k), jnp.int32)
        return jnp.concatenate([sources, summary.astype(jnp.int32), pad], -1)

    def classifier_pairs(self, key: Array, sources: Array, max_hallucination: float = 0.6) -> tuple[Array, Array]:
        """Labelled ``(sequences [N, T], entailed [N])`` for an entailment classifier: each source
        with a summary of random length ``1 .. max_summary`` made of random source tokens, each
        hallucinated with a per-pair probability drawn uniformly in ``[0, max_hallucination]``."""
        P, S, A = self.config.source_length, self.config.max_summary, self.space.num_actions
        sources = jnp.asarray(sources, jnp.int32)
        N = sources.shape[0]
        k_len, k_pos, k_rate, k_flip, k_tok = jax.random.split(key, 5)
        length = jax.random.randint(k_len, (N,), 1, S + 1)
        picked = jnp.take_along_axis(sources, jax.random.randint(k_pos, (N, S), 0, P), -1)
        rate = jax.random.uniform(k_rate, (N, 1), maxval=max_hallucination)
        flip = jax.random.uniform(k_flip, (N, S)) < rate
        absent = ~jnp.any(sources[:, :, None] == jnp.arange(A)[None, None, :], 1) & (jnp.arange(A) != EOS)
        invented = jax.random.categorical(k_tok, jnp.broadcast_to(jnp.where(absent, 0.0, -jnp.inf)[:, None, :], (N, S, A)))
        summary = jnp.where(flip, invented, picked)
        summary = jnp.where(jnp.arange(S)[None, :] < length[:, None], summary, EOS).astype(jnp.int32)
        tokens = jnp.concatenate([sources, summary, jnp.zeros((N, 1), jnp.int32)], -1)
        return tokens, self.scores(tokens)["entailed"]
