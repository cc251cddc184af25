"""Quality and diversity metrics of sampled token sequences (host-side NumPy, exact definitions).

* :func:`distinct_n`: distinct-n of Li et al. (2016, "A Diversity-Promoting Objective Function
  for Neural Conversation Models"): the number of distinct n-grams divided by the total number
  of n-grams, pooled over all samples.
* :func:`self_bleu`: Self-BLEU of Zhu et al. (2018, "Texygen"): each sample is scored by
  sentence-level BLEU (Papineni et al. 2002) with *all other* samples as its references, and
  the scores are averaged. Variant: BLEU-``max_order`` with uniform weights, clipped n-gram
  counts (each n-gram's count clipped by its maximum count in any single reference), the
  brevity penalty against the reference length closest to the hypothesis length (ties to the
  shorter), and smoothing "method 1" of Chen & Cherry (2014) as in NLTK's
  ``SmoothingFunction().method1`` (epsilon = 0.1 added to a zero matched count), which is what
  Texygen calls. A hypothesis with no matching unigram scores 0 (as in NLTK). Texygen's default
  order is 3; we report BLEU-4 unless told otherwise.
* :func:`spearman`: Spearman rank correlation (average ranks for ties).

Sequences are lists of token ids without ``EOS`` (see :func:`envs.token_mdp.strip`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

BLEU_SMOOTHING_EPSILON = 0.1


def _ngram_codes(sequence: Sequence[int], n: int, base: int) -> np.ndarray:
    """Each n-gram of ``sequence`` as one integer (positional base-``base`` code)."""
    seq = np.asarray(sequence, dtype=np.int64)
    if len(seq) < n:
        return np.zeros((0,), dtype=np.int64)
    windows = np.lib.stride_tricks.sliding_window_view(seq, n)
    return windows @ (base ** np.arange(n - 1, -1, -1, dtype=np.int64))


def _check_sequences(sequences) -> list[list[int]]:
    sequences = [list(map(int, s)) for s in sequences]
    if any(t < 0 for s in sequences for t in s):
        raise ValueError("token ids must be >= 0")
    return sequences


def distinct_n(sequences: Sequence[Sequence[int]], n: int) -> float:
    """Distinct n-grams / all n-grams over the whole set of samples (0 if there are none)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    sequences = _check_sequences(sequences)
    base = max((max(s) for s in sequences if s), default=0) + 1
    codes = [_ngram_codes(s, n, base) for s in sequences]
    codes = np.concatenate(codes) if codes else np.zeros(0, dtype=np.int64)
    return float(len(np.unique(codes)) / len(codes)) if len(codes) else 0.0


def _count_matrix(sequences, n: int, base: int) -> np.ndarray:
    """``counts[i, g]``: occurrences of the g-th distinct n-gram (over all samples) in sample i."""
    codes = [_ngram_codes(s, n, base) for s in sequences]
    rows = np.concatenate([np.full(len(c), i) for i, c in enumerate(codes)]).astype(np.int64)
    flat = np.concatenate(codes)
    vocabulary, columns = np.unique(flat, return_inverse=True)
    counts = np.zeros((len(sequences), len(vocabulary)), dtype=np.int32)
    np.add.at(counts, (rows, columns), 1)
    return counts


def self_bleu(sequences: Sequence[Sequence[int]], max_order: int = 4) -> float:
    """Self-BLEU-``max_order`` of a set of samples (see the module docstring); needs >= 2 samples."""
    if max_order < 1:
        raise ValueError(f"max_order must be >= 1, got {max_order}")
    sequences = _check_sequences(sequences)
    if len(sequences) < 2:
        raise ValueError(f"self-BLEU needs at least 2 samples, got {len(sequences)}")
    return float(np.mean(self_bleu_scores(sequences, max_order)))


def self_bleu_scores(sequences: Sequence[Sequence[int]], max_order: int = 4) -> np.ndarray:
    """Per-sample BLEU against all other samples, ``[N]`` (their mean is :func:`self_bleu`)."""
    sequences = _check_sequences(sequences)
    N = len(sequences)
    base = max((max(s) for s in sequences if s), default=0) + 1
    lengths = np.array([len(s) for s in sequences], dtype=np.float64)
    log_precision = np.zeros(N)
    no_unigram_match = np.zeros(N, dtype=bool)
    for n in range(1, max_order + 1):
        counts = _count_matrix(sequences, n, base) if any(len(s) >= n for s in sequences) else np.zeros((N, 0), np.int32)
        if counts.shape[1]:
            # Max count over references j != i: the column max, or the second largest value
            # where row i holds the (unique) maximum.
            order = np.sort(counts, axis=0)
            top, second = order[-1], order[-2]
            is_top = counts == top[None]
            unique_top = is_top.sum(0) == 1
            reference_max = np.where(is_top & unique_top[None], second[None], top[None])
            matched = np.minimum(counts, reference_max).sum(1).astype(np.float64)
            total = counts.sum(1).astype(np.float64)
        else:
            matched, total = np.zeros(N), np.zeros(N)
        if n == 1:
            no_unigram_match = matched == 0
        numerator = np.where(matched == 0, BLEU_SMOOTHING_EPSILON, matched)
        log_precision += np.log(numerator / np.maximum(total, 1.0)) / max_order
    # Brevity penalty: closest other length (ties -> the shorter one).
    distance = np.abs(lengths[None, :] - lengths[:, None])
    np.fill_diagonal(distance, np.inf)
    key = distance * (1 << 20) + lengths[None, :]  # lexicographic (distance, length)
    closest = lengths[np.argmin(key, axis=1)]
    with np.errstate(divide="ignore"):
        brevity = np.where(lengths > closest, 0.0, 1.0 - closest / np.where(lengths > 0, lengths, 1.0))
    scores = np.exp(log_precision + brevity)
    scores = np.where(no_unigram_match | (lengths == 0), 0.0, scores)
    return scores


def spearman(x, y) -> float:
    """Spearman's rank correlation of two equally long 1-D arrays (NaN if either is constant)."""
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same length, got {x.shape} and {y.shape}")
    if x.size < 2:
        raise ValueError("spearman needs at least 2 points")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("spearman needs finite values")
    if np.all(x == x[0]) or np.all(y == y[0]):
        return math.nan
    return float(stats.spearmanr(x, y).statistic)


def reward_correlation(recovered_reward, oracle_log_probs, mask) -> float:
    """Spearman correlation of recovered per-token rewards with the oracle's ``log p(a_t|s_t)``,
    pooled over the real tokens (``mask > 0``)."""
    recovered_reward = np.asarray(recovered_reward)
    oracle_log_probs = np.asarray(oracle_log_probs)
    mask = np.asarray(mask) > 0
    if recovered_reward.shape != oracle_log_probs.shape or recovered_reward.shape != mask.shape:
        raise ValueError(f"shapes differ: reward {recovered_reward.shape}, oracle {oracle_log_probs.shape}, mask {mask.shape}")
    return spearman(recovered_reward[mask], oracle_log_probs[mask])
