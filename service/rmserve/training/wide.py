"""Fitting the model's bag of n-grams: a pairwise logistic regression on the in-graph features.

The features come from `BagOfNgrams.tfidf` itself, so the weights scikit-learn fits are
exactly the weights the ONNX graph multiplies. Regularisation strength is chosen on dev.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import cast

import numpy as np
import scipy.sparse as sp
import torch
from tokenizers import Tokenizer

from rmserve.core.tokenizer import pad_batch
from rmserve.training.baselines import pairwise_weights
from rmserve.training.evaluate import EncodedComparison, pairwise_accuracy, regroup
from rmserve.training.model import BagOfNgrams, response_mask

REGULARISATION_GRID = (0.03, 0.1, 0.3, 1.0, 3.0)
BATCH = 64
CHAR_NGRAM_SIZES = range(2, 6)


def fill_char_ngrams(bag: BagOfNgrams, tokenizer: Tokenizer) -> None:
    """Hash each token's character 2-5-grams (of " word ", as char_wb pads words) into the bag's table."""
    table = torch.full_like(bag.char_ngrams, bag.unused)
    for token_id in range(min(tokenizer.get_vocab_size(), table.shape[0])):
        text = tokenizer.decode([token_id])
        word = text.strip()
        if not word:
            continue
        padded = (" " if text[:1].isspace() else "") + word + " "
        ngrams = [padded[i : i + n] for n in CHAR_NGRAM_SIZES for i in range(len(padded) - n + 1)]
        buckets = [bag.token_buckets + zlib.crc32(g.encode()) % bag.char_buckets for g in ngrams]
        buckets = buckets[: table.shape[1]]
        table[token_id, : len(buckets)] = torch.tensor(buckets, dtype=table.dtype)
    bag.char_ngrams.copy_(table)


def fit_bag(
    bag: BagOfNgrams, train: Sequence[EncodedComparison], dev: Sequence[EncodedComparison], pad_id: int, sep_id: int
) -> dict[str, float]:
    """Set the bag's idf from training responses, then its weights by pairwise logistic regression."""
    train_sequences = [seq for group in train for seq in group]
    bag.idf.fill_(1.0)
    present = _feature_matrix(bag, train_sequences, pad_id, sep_id)[:, : bag.unused] != 0
    document_frequency = np.asarray(present.sum(axis=0)).ravel()
    documents = len(train_sequences)
    idf = np.log((1 + documents) / (1 + document_frequency)) + 1.0
    bag.idf.copy_(torch.from_numpy(np.append(idf, 0.0)))  # the unused bucket never counts

    train_rows = _feature_matrix(bag, train_sequences, pad_id, sep_id)
    dev_rows = _feature_matrix(bag, [seq for group in dev for seq in group], pad_id, sep_id)
    differences = _pair_differences(train_rows, train)

    best: tuple[float, float, np.ndarray] | None = None
    for strength in REGULARISATION_GRID:
        weights = pairwise_weights(differences, strength)
        accuracy = pairwise_accuracy(regroup(dev_rows @ weights, dev))
        if best is None or accuracy > best[1]:
            best = (strength, accuracy, weights)
    assert best is not None  # the grid is never empty
    strength, accuracy, weights = best
    with torch.no_grad():
        bag.weight.copy_(torch.from_numpy(weights[:-1]))
        bag.length_weight.fill_(float(weights[-1]))
    return {"C": strength, "dev_accuracy": accuracy}


def _feature_matrix(bag: BagOfNgrams, sequences: Sequence[Sequence[int]], pad_id: int, sep_id: int) -> sp.csr_matrix:
    """Rows of [TF-IDF of every bucket..., log response length], one per sequence."""
    blocks = []
    for start in range(0, len(sequences), BATCH):
        input_ids, attention_mask = (torch.from_numpy(a) for a in pad_batch(sequences[start : start + BATCH], pad_id))
        in_response = response_mask(input_ids, attention_mask, sep_id)
        with torch.no_grad():
            ngrams = _to_scipy(bag.tfidf(input_ids, in_response))
        length = sp.csr_matrix(bag.log_length(in_response).numpy()[:, None])
        blocks.append(sp.hstack([ngrams, length]))
    return cast(sp.csr_matrix, sp.vstack(blocks).tocsr())  # scipy is untyped: a stack of matrices is a matrix


def _pair_differences(rows: sp.csr_matrix, groups: Sequence[EncodedComparison]) -> sp.csr_matrix:
    """better - worse feature rows for every ordered pair in every comparison."""
    better, worse, start = [], [], 0
    for group in groups:
        for i in range(len(group)):
            for j in range(i + 1, len(group)):
                better.append(start + i)
                worse.append(start + j)
        start += len(group)
    return (rows[better] - rows[worse]).tocsr()


def _to_scipy(dense: torch.Tensor) -> sp.csr_matrix:
    values = dense.numpy()
    rows, columns = np.nonzero(values)
    return sp.csr_matrix((values[rows, columns], (rows, columns)), shape=values.shape)
