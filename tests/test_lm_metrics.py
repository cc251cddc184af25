"""Self-BLEU, distinct-n and Spearman against independent implementations of their definitions."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from agents.lm import metrics as lm_metrics


def _ngrams(sequence, n):
    return Counter(tuple(sequence[i : i + n]) for i in range(len(sequence) - n + 1))


def _sentence_bleu(hypothesis, references, max_order):
    """Papineni et al. BLEU of one hypothesis, NLTK conventions, smoothing method 1 (eps 0.1)."""
    log_p = 0.0
    for n in range(1, max_order + 1):
        counts = _ngrams(hypothesis, n)
        max_ref = Counter()
        for reference in references:
            for gram, c in _ngrams(reference, n).items():
                max_ref[gram] = max(max_ref[gram], c)
        matched = sum(min(c, max_ref[gram]) for gram, c in counts.items())
        total = max(1, sum(counts.values()))
        if n == 1 and matched == 0:
            return 0.0
        log_p += math.log((matched if matched else 0.1) / total) / max_order
    c = len(hypothesis)
    r = min((len(ref) for ref in references), key=lambda length: (abs(length - c), length))
    bp = 1.0 if c > r else (0.0 if c == 0 else math.exp(1 - r / c))
    return bp * math.exp(log_p)


def _self_bleu(sequences, max_order):
    return np.mean([_sentence_bleu(s, sequences[:i] + sequences[i + 1 :], max_order) for i, s in enumerate(sequences)])


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("max_order", [2, 4])
def test_self_bleu_matches_the_definition(seed, max_order):
    rng = np.random.default_rng(seed)
    vocab = int(rng.integers(3, 12))
    sequences = [list(rng.integers(1, vocab, size=int(rng.integers(1, 14)))) for _ in range(int(rng.integers(2, 25)))]
    sequences.append(list(sequences[0]))  # a duplicate: ties in the reference maxima
    expected = _self_bleu(sequences, max_order)
    np.testing.assert_allclose(lm_metrics.self_bleu(sequences, max_order), expected, rtol=1e-12)


def test_self_bleu_extremes():
    same = [[1, 2, 3, 4, 5]] * 4
    assert lm_metrics.self_bleu(same) == pytest.approx(1.0)
    disjoint = [[1, 1, 1, 1], [2, 2, 2, 2], [3, 3, 3, 3]]
    assert lm_metrics.self_bleu(disjoint) == 0.0
    with pytest.raises(ValueError, match="at least 2 samples"):
        lm_metrics.self_bleu([[1, 2]])


def test_self_bleu_against_nltk_when_installed():
    nltk_bleu = pytest.importorskip("nltk.translate.bleu_score")
    rng = np.random.default_rng(0)
    sequences = [list(map(int, rng.integers(1, 6, size=int(rng.integers(4, 12))))) for _ in range(12)]
    smoothing = nltk_bleu.SmoothingFunction().method1
    expected = np.mean(
        [
            nltk_bleu.sentence_bleu(sequences[:i] + sequences[i + 1 :], s, smoothing_function=smoothing)
            for i, s in enumerate(sequences)
        ]
    )
    np.testing.assert_allclose(lm_metrics.self_bleu(sequences, 4), expected, rtol=1e-9)


def test_distinct_n_by_hand():
    sequences = [[1, 2, 3], [1, 2, 4]]
    # bigrams: (1,2), (2,3), (1,2), (2,4) -> 3 distinct of 4
    assert lm_metrics.distinct_n(sequences, 2) == 0.75
    assert lm_metrics.distinct_n(sequences, 1) == 4 / 6
    assert lm_metrics.distinct_n([[1], [2]], 2) == 0.0


def test_spearman_and_reward_correlation():
    x = np.array([0.1, 0.5, 0.2, 0.9, 0.4])
    y = np.array([1.0, 3.0, 2.0, 10.0, 2.5])  # same order as x
    assert lm_metrics.spearman(x, y) == pytest.approx(1.0)
    assert lm_metrics.spearman(x, -y) == pytest.approx(-1.0)
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y[[1, 0, 2, 4, 3]]))
    expected = np.corrcoef(rx, ry)[0, 1]
    assert lm_metrics.spearman(x, y[[1, 0, 2, 4, 3]]) == pytest.approx(expected)
    assert math.isnan(lm_metrics.spearman(x, np.ones(5)))
    mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0]])
    reward = np.array([[1.0, 2.0, 3.0, 99.0], [4.0, 5.0, -99.0, 0.0]])
    oracle = np.array([[0.1, 0.2, 0.3, -5.0], [0.4, 0.5, 7.0, 0.0]])
    assert lm_metrics.reward_correlation(reward, oracle, mask) == pytest.approx(1.0)
