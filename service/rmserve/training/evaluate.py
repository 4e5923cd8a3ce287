"""Scoring encoded comparisons with any scorer (torch or ONNX) and measuring pairwise accuracy."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np

from rmserve.core.formats import InputFormat
from rmserve.core.tokenizer import pad_batch
from rmserve.training.data import Comparison

# (input_ids, attention_mask) int64 [batch, seq] -> raw rewards [batch]; OnnxScorer is one.
ScoreFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
EncodedComparison = list[list[int]]  # token ids of each response, best first


def encode_comparisons(input_format: InputFormat, comparisons: Sequence[Comparison]) -> list[EncodedComparison]:
    """Every response with its prompt, laid out by the model's input format as the server lays out a request."""
    encodings = input_format.encode([exchange for c in comparisons for exchange in c.exchanges()])
    flat = iter(encoding.input_ids for encoding in encodings)
    return [[next(flat) for _ in c.responses] for c in comparisons]


def length_batches(sequences: Sequence[Sequence[int]], max_batch_tokens: int = 8192) -> Iterator[list[int]]:
    """Indices of the sequences in batches of similar length, each within `max_batch_tokens` padded tokens."""
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    start = 0
    while start < len(order):
        end = start + 1
        while end < len(order) and len(sequences[order[end]]) * (end - start + 1) <= max_batch_tokens:
            end += 1
        yield order[start:end]
        start = end


def score_sequences(
    score_fn: ScoreFn, sequences: Sequence[Sequence[int]], pad_id: int, max_batch_tokens: int = 8192
) -> np.ndarray:
    """Raw rewards for token sequences, batched by similar length so padding stays small."""
    scores = np.zeros(len(sequences), dtype=np.float64)
    for chunk in length_batches(sequences, max_batch_tokens):
        scores[chunk] = score_fn(*pad_batch([sequences[i] for i in chunk], pad_id))
    return scores


def score_comparisons(score_fn: ScoreFn, encoded: Sequence[EncodedComparison], pad_id: int) -> list[np.ndarray]:
    """Raw rewards per comparison, in the comparison's best-first order."""
    return regroup(score_sequences(score_fn, [seq for group in encoded for seq in group], pad_id), encoded)


def regroup(flat: np.ndarray, groups: Sequence[Sequence[object]]) -> list[np.ndarray]:
    """Split scores of all responses, flattened, back into one array per comparison."""
    grouped, start = [], 0
    for group in groups:
        grouped.append(flat[start : start + len(group)])
        start += len(group)
    return grouped


def pair_outcomes(scores: Sequence[np.ndarray]) -> np.ndarray:
    """Per (better, worse) pair, in order: 1 if the scores order it correctly, 0.5 for a tie, else 0."""
    outcomes = [
        1.0 if group[i] > group[j] else 0.5 if group[i] == group[j] else 0.0
        for group in scores
        for i in range(len(group))
        for j in range(i + 1, len(group))
    ]
    return np.array(outcomes)


def pairwise_accuracy(scores: Sequence[np.ndarray]) -> float:
    """Share of (better, worse) pairs the scores order correctly; a tie counts as half."""
    return float(pair_outcomes(scores).mean())


# Score differences this small are float noise between runtimes, not an order: a tie.
TIE_TOLERANCE = 1e-5


def ranking_agreement(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> float:
    """Share of within-comparison pairs that two scorers order the same way (near-ties agree)."""
    agree, total = 0, 0
    for x, y in zip(a, b, strict=True):
        for i in range(len(x)):
            for j in range(i + 1, len(x)):
                x_diff, y_diff = x[i] - x[j], y[i] - y[j]
                tied = min(abs(x_diff), abs(y_diff)) <= TIE_TOLERANCE
                agree += tied or np.sign(x_diff) == np.sign(y_diff)
                total += 1
    return agree / total
