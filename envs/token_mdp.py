"""Token-level MDPs with an exact oracle language model (synthetic, sparse hidden-Markov sources).

Token-level MDP (Wulfmeier et al. 2024, arXiv 2409.01369, Sec. 3): the state ``s_t`` is the
prefix ``x_{<t}``, the action ``a_t = x_t`` is the next token, transitions are deterministic
(``s_{t+1} = s_t + [a_t]``) and the episode ends with the end-of-sequence action ``EOS``; the
value of every state after ``EOS`` is 0. With the oracle's log-probabilities as reward and
temperature 1, the oracle is the soft-optimal policy of this MDP and its soft value is 0 in every
state (``V(s) = log sum_a p(a|s) exp(0) = 0``), so its log-probabilities are the "true reward"
a recovered reward can be compared with.

Conventions (used by every module of the lab that handles token sequences):
  * actions are ``0 .. num_actions - 1``; ``EOS = 0``; regular tokens are ``1 .. vocab_size``,
    so ``num_actions = vocab_size + 1``;
  * a batch of sequences is an integer array ``tokens[N, T]`` with ``T = max_length + 1`` (room
    for ``max_length`` regular tokens and the final ``EOS``); position ``t`` holds the action
    taken in state ``x_{<t}``;
  * positions after the first ``EOS`` are padding: they hold ``EOS`` too (``PAD = EOS``) and are
    excluded by :func:`sequence_mask`, which is 1 up to *and including* the first ``EOS``;
  * :func:`continuation_mask` is 1 where the successor state ``s_{t+1}`` is not terminal (the
    action is a regular token inside the window); ``V(s_{t+1})`` counts only there.

Oracle: a hidden-Markov source. A hidden state ``h_0 ~ initial``; at step ``t`` the sequence ends
with probability ``eos_t`` (0 before ``min_length``, a constant hazard in between, 1 at
``max_length``), otherwise it emits a regular token ``x_t ~ emission[h_t]`` and moves on,
``h_{t+1} ~ transition[h_t]``. Emissions and transitions are sparse (a few random supports with
softmax(g / temperature) weights, ``g ~ N(0, 1)``; the temperature tunes the entropy) and every
emission is smoothed with ``smoothing / vocab_size`` on all tokens, so any token sequence inside
the length window has a finite log-likelihood. A first-order Markov chain over tokens is the
special case ``hidden state = last token`` with identity emissions (``kind="markov"``; its
smoothing is put on the transitions instead). Exact likelihoods, next-token distributions and
per-step entropies come from the forward (filtering) recursion, in one ``lax.scan``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

EOS = 0
"""The end-of-sequence action; also the padding value after the first EOS."""
PAD = EOS
"""Padding value: positions after the first EOS hold EOS and are masked out."""


# ---------------------------------------------------------------------------------------------
# Token-level MDP semantics
# ---------------------------------------------------------------------------------------------


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def validate_tokens(tokens, num_actions: int | None = None, *, require_eos: bool = False) -> Array:
    """Check a ``[T]`` or ``[N, T]`` integer token array; return it as a JAX int32 array.

    Raises:
      ValueError: for a non-integer dtype, a rank other than 1 or 2, an empty time axis, values
        outside ``[0, num_actions)`` or (with ``require_eos``) a sequence with no ``EOS``.
    """
    if _is_concrete(tokens):
        array = np.asarray(tokens)
        if not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"tokens must be integers, got dtype {array.dtype}")
        if array.ndim not in (1, 2):
            raise ValueError(f"tokens must have shape [T] or [N, T], got shape {array.shape}")
        if array.shape[-1] == 0:
            raise ValueError("tokens need at least one position (T >= 1)")
        if array.size and array.min() < 0:
            raise ValueError(f"token ids must be >= 0, found {array.min()}")
        if num_actions is not None and array.size and array.max() >= num_actions:
            raise ValueError(f"token ids must be < num_actions = {num_actions}, found {array.max()}")
        if require_eos and not np.all(np.any(array == EOS, axis=-1)):
            first = int(np.argmin(np.any(np.atleast_2d(array) == EOS, axis=-1)))
            raise ValueError(f"every sequence must contain EOS (= {EOS}) within its window; sequence {first} has none")
        return jnp.asarray(array, dtype=jnp.int32)
    if not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise ValueError(f"tokens must be integers, got dtype {tokens.dtype}")
    if tokens.ndim not in (1, 2):
        raise ValueError(f"tokens must have shape [T] or [N, T], got shape {tokens.shape}")
    return tokens.astype(jnp.int32)


def sequence_mask(tokens: Array) -> Array:
    """1.0 at every real action (up to and including the first ``EOS``), 0.0 on padding."""
    tokens = jnp.asarray(tokens)
    is_eos = (tokens == EOS).astype(jnp.int32)
    eos_before = jnp.cumsum(is_eos, axis=-1) - is_eos  # EOS strictly before position t
    return (eos_before == 0).astype(jnp.float32)


def continuation_mask(tokens: Array) -> Array:
    """1.0 where ``s_{t+1}`` is a non-terminal state inside the window (its value counts).

    0 after ``EOS`` (terminal: value 0), on padding, and at the last position (no successor in
    the window).
    """
    tokens = jnp.asarray(tokens)
    inside = jnp.arange(tokens.shape[-1]) < tokens.shape[-1] - 1
    return sequence_mask(tokens) * (tokens != EOS) * inside


def sequence_lengths(tokens: Array) -> Array:
    """Number of regular tokens before the first ``EOS`` (the whole window if there is none)."""
    return jnp.sum(sequence_mask(tokens) * (jnp.asarray(tokens) != EOS), axis=-1).astype(jnp.int32)


def step(prefix: Array, length, action) -> Array:
    """The deterministic transition ``s_{t+1} = s_t + [a_t]``: write ``action`` at ``length``.

    ``prefix`` is a ``[T]`` window holding the state's ``length`` tokens (padding after them).
    """
    return jnp.asarray(prefix).at[length].set(action)


def strip(tokens) -> list[list[int]]:
    """The regular tokens of each sequence (before its first ``EOS``), as Python lists."""
    array = np.atleast_2d(np.asarray(tokens))
    out = []
    for row in array:
        eos = np.flatnonzero(row == EOS)
        out.append(row[: eos[0] if eos.size else len(row)].tolist())
    return out


# ---------------------------------------------------------------------------------------------
# The oracle
# ---------------------------------------------------------------------------------------------


class TokenOracle(NamedTuple):
    """Jittable parameters of a hidden-Markov oracle (see the module docstring).

    Attributes:
      initial: ``[H]`` distribution of the first hidden state.
      transition: ``[H, H]`` row-stochastic hidden-state transitions.
      emission: ``[H, A]`` row-stochastic emissions over actions; the ``EOS`` column is 0 (the
        end of a sequence is decided by ``eos_probs``).
      eos_probs: ``[T]`` probability of ending at position ``t`` (``T = max_length + 1``; 0
        before ``min_length``, 1 at ``max_length``).
    """

    initial: Array
    transition: Array
    emission: Array
    eos_probs: Array

    @property
    def num_hidden(self) -> int:
        return self.initial.shape[-1]

    @property
    def num_actions(self) -> int:
        return self.emission.shape[-1]

    @property
    def vocab_size(self) -> int:
        return self.num_actions - 1

    @property
    def window(self) -> int:
        """``T = max_length + 1``: positions per sequence array."""
        return self.eos_probs.shape[-1]

    @property
    def max_length(self) -> int:
        return self.window - 1


def _check_probabilities(name: str, array: np.ndarray, axis: int = -1):
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or inf")
    if np.any(array < 0):
        raise ValueError(f"{name} must be >= 0")
    sums = array.sum(axis)
    if np.any(np.abs(sums - 1.0) > 1e-6):
        raise ValueError(f"{name} must sum to 1 along its last axis; sums range in [{sums.min():.6g}, {sums.max():.6g}]")


def length_schedule(min_length: int, max_length: int, eos_hazard: float) -> np.ndarray:
    """``eos_probs[t]`` for ``t = 0 .. max_length``: 0 below ``min_length``, the hazard in between, 1 at the end."""
    if not (isinstance(min_length, (int, np.integer)) and isinstance(max_length, (int, np.integer))):
        raise ValueError(f"min_length and max_length must be integers, got {min_length!r}, {max_length!r}")
    if not 0 <= min_length <= max_length:
        raise ValueError(f"need 0 <= min_length <= max_length, got min_length={min_length}, max_length={max_length}")
    if not (0.0 <= eos_hazard <= 1.0) or math.isnan(eos_hazard):
        raise ValueError(f"eos_hazard must lie in [0, 1], got {eos_hazard}")
    probs = np.zeros(max_length + 1)
    probs[min_length:max_length] = eos_hazard
    probs[max_length] = 1.0
    return probs


def make_oracle(initial, transition, emission, eos_probs) -> TokenOracle:
    """Validate arrays (float64 on the host) and build a :class:`TokenOracle`.

    Raises:
      ValueError: for shape mismatches, NaN, negative entries, rows not summing to 1, an
        ``EOS`` column that is not 0, or ``eos_probs`` outside [0, 1] or not ending in 1.
    """
    initial = np.asarray(initial, dtype=np.float64)
    transition = np.asarray(transition, dtype=np.float64)
    emission = np.asarray(emission, dtype=np.float64)
    eos_probs = np.asarray(eos_probs, dtype=np.float64)
    if initial.ndim != 1 or initial.size == 0:
        raise ValueError(f"initial must have shape [H] with H >= 1, got {initial.shape}")
    H = initial.size
    if transition.shape != (H, H):
        raise ValueError(f"transition must have shape [H, H] = {(H, H)}, got {transition.shape}")
    if emission.ndim != 2 or emission.shape[0] != H or emission.shape[1] < 2:
        raise ValueError(f"emission must have shape [H, A] = [{H}, A >= 2], got {emission.shape}")
    if eos_probs.ndim != 1 or eos_probs.size == 0:
        raise ValueError(f"eos_probs must have shape [T], got {eos_probs.shape}")
    _check_probabilities("initial", initial)
    _check_probabilities("transition", transition)
    _check_probabilities("emission", emission)
    if np.any(emission[:, EOS] != 0):
        raise ValueError("emission[:, EOS] must be 0: the end of a sequence is set by eos_probs")
    if not np.all(np.isfinite(eos_probs)) or np.any(eos_probs < 0) or np.any(eos_probs > 1):
        raise ValueError("eos_probs must lie in [0, 1]")
    if eos_probs[-1] != 1.0:
        raise ValueError("eos_probs must end in 1 (every sequence ends inside its window)")
    return TokenOracle(
        initial=jnp.asarray(initial, dtype=jnp.float32),
        transition=jnp.asarray(transition, dtype=jnp.float32),
        emission=jnp.asarray(emission, dtype=jnp.float32),
        eos_probs=jnp.asarray(eos_probs, dtype=jnp.float32),
    )


def _sparse_rows(rng: np.random.Generator, rows: int, cols: int, support: int, temperature: float) -> np.ndarray:
    """Row-stochastic ``[rows, cols]``: ``support`` random entries per row, softmax(g / temperature)."""
    out = np.zeros((rows, cols))
    for r in range(rows):
        idx = rng.choice(cols, size=support, replace=False)
        g = rng.standard_normal(support) / temperature
        w = np.exp(g - g.max())
        out[r, idx] = w / w.sum()
    return out


@dataclasses.dataclass(frozen=True)
class TokenSpace:
    """The shape of a token-level MDP that a learner needs: actions, window and length window.

    ``num_actions`` counts ``EOS`` (vocabulary + 1); ``window = T = max_length + 1`` positions per
    sequence array; sampling excludes ``EOS`` before ``min_length`` and forces it at ``T - 1``.
    A teacher, a reference and a student of different sizes share one space.
    """

    num_actions: int = 33
    window: int = 33
    min_length: int = 16

    def __post_init__(self):
        for name in ("num_actions", "window"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.num_actions < 2:
            raise ValueError(f"num_actions must be >= 2 (EOS and one token), got {self.num_actions}")
        if not isinstance(self.min_length, (int, np.integer)) or not 0 <= self.min_length < self.window:
            raise ValueError(f"min_length must be an integer in [0, window - 1 = {self.window - 1}], got {self.min_length!r}")

    @property
    def bos(self) -> int:
        """The beginning-of-sequence input id (one past the last action)."""
        return self.num_actions


@dataclasses.dataclass(frozen=True)
class OracleConfig:
    """A random sparse oracle language model (see the module docstring); ``build()`` makes it."""

    kind: Literal["hmm", "markov"] = "hmm"
    """"hmm" (hidden states emit tokens) or "markov" (the next token depends on the last one;
    num_hidden and emission_support are ignored, the first token is uniform)."""
    vocab_size: int = 32
    """Regular tokens (num_actions = vocab_size + 1 with EOS)."""
    num_hidden: int = 16
    """Hidden states H of the HMM."""
    branching: int = 3
    """Successors per hidden state (per token for "markov")."""
    emission_support: int = 4
    """Tokens each hidden state emits (before smoothing)."""
    temperature: float = 1.0
    """> 0; lower means peakier weights on each support, i.e. lower entropy."""
    smoothing: float = 1e-3
    """In [0, 1): mass spread uniformly over all regular tokens."""
    min_length: int = 16
    """Fewest regular tokens per sequence (see length_schedule)."""
    max_length: int = 32
    """Most regular tokens per sequence."""
    eos_hazard: float = 0.125
    """Probability of ending at each position between min_length and max_length."""
    seed: int = 0
    """The generator's seed (NumPy, host side)."""

    def __post_init__(self):
        if self.kind not in ("hmm", "markov"):
            raise ValueError(f"unknown oracle kind {self.kind!r}; choose 'hmm' or 'markov'")
        for name in ("vocab_size", "num_hidden", "branching"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise ValueError(f"temperature must be finite and > 0, got {self.temperature}")
        if not 0.0 <= self.smoothing < 1.0:
            raise ValueError(f"smoothing must lie in [0, 1), got {self.smoothing}")
        length_schedule(self.min_length, self.max_length, self.eos_hazard)  # validates the window
        if self.kind == "hmm":
            if not 1 <= self.emission_support <= self.vocab_size:
                raise ValueError(f"emission_support must lie in [1, vocab_size = {self.vocab_size}], got {self.emission_support}")
            if self.branching > self.num_hidden:
                raise ValueError(f"branching ({self.branching}) must be <= num_hidden ({self.num_hidden})")
        elif self.branching > self.vocab_size:
            raise ValueError(f"branching ({self.branching}) must be <= vocab_size ({self.vocab_size})")

    @property
    def space(self) -> TokenSpace:
        """The token space of the oracle's sequences."""
        return TokenSpace(self.vocab_size + 1, self.max_length + 1, self.min_length)

    def build(self) -> TokenOracle:
        """Draw the oracle's sparse tables (host-side NumPy, seeded by ``seed``)."""
        rng = np.random.default_rng(self.seed)
        V, temperature, smoothing = self.vocab_size, self.temperature, self.smoothing
        uniform_tokens = np.full(V, 1.0 / V)
        if self.kind == "hmm":
            H = self.num_hidden
            initial = np.full(H, 1.0 / H)
            transition = _sparse_rows(rng, H, H, self.branching, temperature)
            emitted = _sparse_rows(rng, H, V, self.emission_support, temperature)
            tokens = (1 - smoothing) * emitted + smoothing * uniform_tokens
        else:
            # hidden state = the last token; state 0 is "no token yet" and emits nothing itself:
            # we fold it into the initial distribution, so H = V and h_t is the token x_t.
            H = V
            initial = uniform_tokens.copy()
            transition = (1 - smoothing) * _sparse_rows(rng, H, H, self.branching, temperature) + smoothing * uniform_tokens
            tokens = np.eye(V)
        emission = np.concatenate([np.zeros((H, 1)), tokens], axis=1)
        return make_oracle(initial, transition, emission, length_schedule(self.min_length, self.max_length, self.eos_hazard))


def random_oracle(kind: Literal["hmm", "markov"] = "hmm", **settings) -> TokenOracle:
    """``OracleConfig(kind, **settings).build()``: a random sparse oracle (fields of :class:`OracleConfig`)."""
    return OracleConfig(kind, **settings).build()


# ---------------------------------------------------------------------------------------------
# Sampling and exact scoring
# ---------------------------------------------------------------------------------------------


def _safe_log(p: Array) -> Array:
    return jnp.where(p > 0, jnp.log(jnp.where(p > 0, p, 1.0)), -jnp.inf)


def sample(oracle: TokenOracle, key: Array, num_sequences: int) -> Array:
    """Draw ``num_sequences`` oracle sequences ``[N, T]`` (int32, padded with ``EOS``); jitted.

    All randomness is drawn up front (Gumbel-max for categorical draws, uniforms for the end
    of a sequence), so the scan over positions holds no random-number generation.

    Raises:
      ValueError: if ``num_sequences`` is not a positive integer (it fixes the output's shape).
    """
    if isinstance(num_sequences, bool) or not isinstance(num_sequences, (int, np.integer)) or num_sequences < 1:
        raise ValueError(f"num_sequences must be a positive integer, got {num_sequences!r}")
    return _sample(oracle, key, int(num_sequences))


@functools.partial(jax.jit, static_argnums=2)
def _sample(oracle: TokenOracle, key: Array, num_sequences: int) -> Array:
    belief = jnp.broadcast_to(oracle.initial, (num_sequences, oracle.num_hidden))
    return _continue(oracle, key, belief, jnp.zeros((num_sequences, 0), jnp.int32))


@jax.jit
def _continue(oracle: TokenOracle, key: Array, belief: Array, prompts: Array) -> Array:
    """Sequences ``[N, T]``: ``prompts [N, P]`` then the hidden-Markov source run from positions
    ``P .. T - 1``, its hidden state ``h_P`` drawn from ``belief [N, H] = p(h_P | prompt)``.

    Exact conditional sampling: given ``h_P`` the future is independent of the prompt.
    """
    T, N, P = oracle.window, prompts.shape[0], prompts.shape[1]
    log_transition = _safe_log(oracle.transition)
    log_emission = _safe_log(oracle.emission)
    # One uniform draw (one RNG call site compiles fastest), turned into Gumbel noise.
    H, A = oracle.num_hidden, oracle.num_actions
    u = jax.random.uniform(key, (T - P + 1, N, 1 + A + H), minval=jnp.finfo(jnp.float32).tiny, maxval=1.0)
    gumbel = -jnp.log(-jnp.log(u))
    h0 = jnp.argmax(_safe_log(belief) + gumbel[0, :, :H], axis=-1)
    stop_noise, token_noise, next_noise = u[1:, :, 0], gumbel[1:, :, 1 : 1 + A], gumbel[1:, :, 1 + A :]

    def body(carry, inputs):
        h, done = carry
        t, stop_u, token_g, next_g = inputs
        stop = done | (stop_u < oracle.eos_probs[t])
        token = jnp.argmax(log_emission[h] + token_g, axis=-1)
        h_next = jnp.argmax(log_transition[h] + next_g, axis=-1)
        return (h_next, stop), jnp.where(stop, EOS, token)

    init = (h0, jnp.zeros((N,), dtype=bool))
    _, actions = jax.lax.scan(body, init, (jnp.arange(P, T), stop_noise, token_noise, next_noise))
    return jnp.concatenate([prompts.astype(jnp.int32), actions.T.astype(jnp.int32)], axis=1)


class OracleScores(NamedTuple):
    """Per-position exact quantities along given sequences (0 on padding).

    Attributes:
      log_probs: ``[N, T, A]`` the oracle's next-action distribution ``log p(. | x_{<t})``.
      step_log_probs: ``[N, T]`` ``log p(x_t | x_{<t})`` of the given actions.
      entropy: ``[N, T]`` exact entropy of ``p(. | x_{<t})`` in nats.
      mask: ``[N, T]`` :func:`sequence_mask`.
    """

    log_probs: Array
    step_log_probs: Array
    entropy: Array
    mask: Array

    @property
    def log_likelihood(self) -> Array:
        """``[N]`` exact ``log p(x)`` (``-inf`` for a sequence the oracle cannot produce)."""
        return jnp.sum(jnp.where(self.mask > 0, self.step_log_probs, 0.0), axis=-1)


def _next_probs(oracle: TokenOracle, belief: Array, t) -> Array:
    """``p(. | x_{<t})`` from the filtered belief ``p(h_t | x_{<t})`` (action axis last)."""
    token_probs = belief @ oracle.emission  # [..., A], EOS column is 0
    is_eos_column = jnp.arange(oracle.num_actions) == EOS
    return jnp.where(is_eos_column, oracle.eos_probs[t], (1 - oracle.eos_probs[t]) * token_probs)


def _filter_step(oracle: TokenOracle, belief: Array, action) -> Array:
    """One forward-recursion step for one sequence: condition ``p(h_t | x_{<t})`` on ``x_t``, then move.

    ``b' ∝ (b * E[:, x]) @ P``; the belief stays put after ``EOS``.
    """
    joint = belief * oracle.emission[:, action]
    total = jnp.sum(joint)
    posterior = jnp.where(total > 0, joint / jnp.where(total > 0, total, 1.0), belief)
    next_belief = posterior @ oracle.transition
    return jnp.where(action == EOS, belief, next_belief)


def score(oracle: TokenOracle, tokens: Array) -> OracleScores:
    """Exact next-action distributions, log-probabilities and entropies along ``tokens``.

    The forward recursion keeps the filtered belief ``b_t(h) = p(h_t = h | x_{<t})``; the
    next-action distribution is ``p(EOS) = eos_t``, ``p(x) = (1 - eos_t) sum_h b_t(h) E[h, x]``.
    ``tokens`` is ``[T]`` or ``[N, T]`` with ``T = oracle.window`` (see the module conventions).

    Concrete token ids outside ``[0, num_actions)`` raise ``ValueError``. Under ``jit`` they
    cannot be checked: the step of an out-of-range id and every later step of its sequence
    score NaN (so does its ``log_likelihood``), never a clamped id's plausible number.
    """
    tokens = validate_tokens(tokens, oracle.num_actions)
    squeeze = tokens.ndim == 1
    tokens = jnp.atleast_2d(tokens)
    if tokens.shape[-1] != oracle.window:
        raise ValueError(f"tokens must have T = max_length + 1 = {oracle.window} positions, got {tokens.shape[-1]}")
    scores = _score(oracle, tokens)
    if squeeze:
        scores = OracleScores(*(x[0] for x in scores))
    return scores


@jax.jit
def _score(oracle: TokenOracle, tokens: Array) -> OracleScores:
    mask = sequence_mask(tokens)

    def one(sequence):
        def body(belief, inputs):
            t, action = inputs
            probs = _next_probs(oracle, belief, t)
            log_probs = _safe_log(probs)
            entropy = -jnp.sum(jnp.where(probs > 0, probs * log_probs, 0.0))
            next_belief = _filter_step(oracle, belief, action)
            # An out-of-range id (only possible under jit) poisons the rest of the sequence.
            valid = (action >= 0) & (action < oracle.num_actions)
            next_belief = jnp.where(valid, next_belief, jnp.nan)
            return next_belief, (log_probs, jnp.where(valid, log_probs[action], jnp.nan), entropy)

        _, out = jax.lax.scan(body, oracle.initial, (jnp.arange(oracle.window), sequence))
        return out

    log_probs, step_log_probs, entropy = jax.vmap(one)(tokens)
    step_log_probs = jnp.where(mask > 0, step_log_probs, 0.0)
    entropy = entropy * mask
    return OracleScores(log_probs, step_log_probs, entropy, mask)


def log_likelihood(oracle: TokenOracle, tokens: Array) -> Array:
    """Exact ``log p(x)`` of each sequence (``[N]``, or a scalar for a ``[T]`` input)."""
    return score(oracle, tokens).log_likelihood


def oracle_log_policy(oracle: TokenOracle, tokens: Array) -> Array:
    """``log p(a | s_t)`` for all actions along ``tokens``: the oracle as a soft-optimal policy.

    With reward ``r(s, a) = log p(a | s)``, discount 1 and temperature 1 these are also the
    oracle's soft Q-values (its soft value is 0 everywhere).
    """
    return score(oracle, tokens).log_probs


# ---------------------------------------------------------------------------------------------
# Prompted tasks
# ---------------------------------------------------------------------------------------------
#
# A prompted task splits each sequence array ``tokens[N, T]`` at a fixed ``prompt_length = P``:
# positions ``0 .. P - 1`` hold the prompt ``x`` (regular tokens, an oracle prefix), positions
# ``P ..`` the completion ``y`` up to and including its ``EOS``. The window and every convention
# above are unchanged, so any model of the lab reads a prompted sequence as it reads any other;
# only the mask changes (:func:`completion_mask`: 1 on the completion's real actions). Prompts
# are ``[N, P]`` integer arrays; ``P = 0`` (an ``[N, 0]`` array) is the unprompted case, where the
# completion is the whole sequence. ``P`` may not exceed the oracle's minimum length, so an
# oracle sequence never ends inside its prompt.


def oracle_min_length(oracle: TokenOracle) -> int:
    """The fewest regular tokens an oracle sequence has (the first position with ``eos_probs > 0``)."""
    return int(np.argmax(np.asarray(oracle.eos_probs) > 0))


def check_prompt_length(oracle: TokenOracle, prompt_length) -> int:
    """``prompt_length`` as an int in ``[0, min_length]``; ``ValueError`` naming it otherwise."""
    limit = oracle_min_length(oracle)
    if isinstance(prompt_length, bool) or not isinstance(prompt_length, (int, np.integer)) or not 0 <= prompt_length <= limit:
        raise ValueError(
            f"prompt_length must be an integer in [0, min_length = {limit}] (an oracle sequence may end "
            f"after min_length tokens, inside a longer prompt), got {prompt_length!r}"
        )
    return int(prompt_length)


def check_prompts(oracle: TokenOracle, prompts) -> Array:
    """Validate ``prompts [N, P]`` (regular tokens, ``P <= min_length``); return them as int32."""
    if _is_concrete(prompts):
        array = np.asarray(prompts)
        if array.ndim != 2:
            raise ValueError(f"prompts must have shape [N, P], got shape {array.shape}")
        if not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"prompts must be integers, got dtype {array.dtype}")
        check_prompt_length(oracle, array.shape[1])
        if array.size and (array.min() < 1 or array.max() >= oracle.num_actions):
            raise ValueError(f"prompt tokens must be regular tokens in [1, {oracle.num_actions - 1}] (no EOS)")
        return jnp.asarray(array, dtype=jnp.int32)
    if prompts.ndim != 2:
        raise ValueError(f"prompts must have shape [N, P], got shape {prompts.shape}")
    check_prompt_length(oracle, prompts.shape[1])
    return prompts.astype(jnp.int32)


def completion_mask(tokens: Array, prompt_length: int) -> Array:
    """:func:`sequence_mask` restricted to the completion: 0 on the prompt's ``prompt_length`` positions."""
    tokens = jnp.asarray(tokens)
    return sequence_mask(tokens) * (jnp.arange(tokens.shape[-1]) >= prompt_length)


def sample_prompts(oracle: TokenOracle, key: Array, num_prompts: int, prompt_length: int) -> Array:
    """``num_prompts`` i.i.d. oracle prefixes ``[N, P]`` (the first ``P`` tokens of oracle samples)."""
    prompt_length = check_prompt_length(oracle, prompt_length)
    return sample(oracle, key, num_prompts)[:, :prompt_length]


def split_prompts(
    oracle: TokenOracle, key: Array, num_train: int, num_heldout: int, prompt_length: int, max_rounds: int = 64
) -> tuple[Array, Array]:
    """Disjoint train and held-out prompt sets ``([num_train, P], [num_heldout, P])``.

    Held-out prompts are i.i.d. oracle prefixes; train prompts are i.i.d. oracle prefixes
    conditioned on not being a held-out prompt (rejection sampling, on the host), so no prompt
    is in both sets. Prompts may repeat within a set, as i.i.d. draws do. With ``P = 0`` every
    prompt is the empty one and both sets are ``[N, 0]``.

    Raises:
      ValueError: for bad sizes, or if rejection keeps too few train prompts in ``max_rounds``
        rounds (the held-out prompts then cover almost all of the oracle's prefix mass).
    """
    for name, value in (("num_train", num_train), ("num_heldout", num_heldout)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    prompt_length = check_prompt_length(oracle, prompt_length)
    key_heldout, key_train = jax.random.split(key)
    heldout = sample_prompts(oracle, key_heldout, num_heldout, prompt_length)
    if prompt_length == 0:
        return jnp.zeros((num_train, 0), jnp.int32), heldout
    excluded = {tuple(row) for row in np.asarray(heldout).tolist()}
    kept: list[list[int]] = []
    for round_ in range(max_rounds):
        draws = np.asarray(sample_prompts(oracle, jax.random.fold_in(key_train, round_), 2 * num_train, prompt_length))
        kept += [row for row in draws.tolist() if tuple(row) not in excluded]
        if len(kept) >= num_train:
            return jnp.asarray(kept[:num_train], jnp.int32), heldout
    raise ValueError(
        f"split_prompts: only {len(kept)} of {num_train} train prompts of length {prompt_length} avoided the "
        f"held-out set in {max_rounds} rounds; use fewer held-out prompts or longer prompts"
    )


def sample_completions(oracle: TokenOracle, key: Array, prompts: Array, num_per_prompt: int = 1) -> Array:
    """Oracle completions of each prompt: ``[N * k, T]`` sequences, prompt ``i``'s ``k`` rows at
    ``i * k .. i * k + k - 1`` (prompt then completion, padded with ``EOS``).

    Exact conditional sampling from ``p*(y | x)``: the hidden state at position ``P`` is drawn
    from the filtered belief ``p(h_P | x)`` (:func:`prefix_belief`), then the source runs on.
    """
    prompts = check_prompts(oracle, prompts)
    if isinstance(num_per_prompt, bool) or not isinstance(num_per_prompt, (int, np.integer)) or num_per_prompt < 1:
        raise ValueError(f"num_per_prompt must be a positive integer, got {num_per_prompt!r}")
    prompts = jnp.repeat(prompts, int(num_per_prompt), axis=0)
    return _continue(oracle, key, prefix_belief(oracle, prompts), prompts)


@jax.jit
def _prefix_belief(oracle: TokenOracle, prefixes: Array) -> Array:
    def one(prefix):
        return jax.lax.scan(lambda belief, action: (_filter_step(oracle, belief, action), None), oracle.initial, prefix)[0]

    return jax.vmap(one)(prefixes)


def prefix_belief(oracle: TokenOracle, prefixes: Array) -> Array:
    """``[N, H]`` the filtered hidden-state distribution ``p(h_L | x_{<L})`` after ``prefixes [N, L]``
    (regular tokens, no ``EOS``; ``L = 0`` gives the initial distribution)."""
    prefixes = validate_tokens(prefixes, oracle.num_actions) if prefixes.shape[-1] else jnp.asarray(prefixes, jnp.int32)
    if prefixes.ndim != 2:
        raise ValueError(f"prefixes must have shape [N, L], got shape {prefixes.shape}")
    return _prefix_belief(oracle, prefixes)


def next_token_log_probs(oracle: TokenOracle, prefixes: Array) -> Array:
    """Exact ``[N, A]`` next-action distribution ``log p(x_L = . | x_{<L})`` after ``prefixes [N, L]``.

    The forward recursion on the prefix (regular tokens only: a prefix holding ``EOS`` has
    ended), then the length schedule at position ``L``; ``L`` must be at most ``max_length``.
    """
    prefixes = jnp.asarray(prefixes)
    if prefixes.ndim != 2 or prefixes.shape[1] > oracle.max_length:
        raise ValueError(f"prefixes must have shape [N, L] with L <= max_length = {oracle.max_length}, got {prefixes.shape}")
    if _is_concrete(prefixes) and prefixes.size and np.asarray(prefixes).min() < 1:
        raise ValueError("prefixes must hold regular tokens only (no EOS: such a prefix has ended)")
    belief = prefix_belief(oracle, prefixes)
    return _safe_log(_next_probs(oracle, belief, prefixes.shape[1]))


def conditional_log_likelihood(oracle: TokenOracle, tokens: Array, prompt_length: int) -> Array:
    """Exact ``log p*(y | x)`` of each sequence ``[N]``: the completion's log-probabilities given
    its first ``prompt_length`` tokens (``log p*(x, y) - log p*(x)``; ``prompt_length = 0`` gives
    :func:`log_likelihood`)."""
    prompt_length = check_prompt_length(oracle, prompt_length)
    scores = score(oracle, tokens)
    mask = completion_mask(jnp.atleast_2d(tokens), prompt_length).reshape(scores.mask.shape)
    if (
        _is_concrete(tokens)
        and prompt_length
        and np.any(np.asarray(scores.mask)[..., :prompt_length] * (np.asarray(tokens)[..., :prompt_length] == EOS))
    ):
        raise ValueError(f"a sequence ends inside its prompt (EOS among its first {prompt_length} tokens)")
    return jnp.sum(jnp.where(mask > 0, scores.step_log_probs, 0.0), axis=-1)
