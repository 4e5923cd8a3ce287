"""What the training responses look like to the served graph: normalization and flag statistics.

`rmserve export` computes both from the same run of every training response: scores, lengths
and, when the graph exports one, the pooled embedding whose Gaussian the out-of-distribution
flag measures distance under (`rmserve.core.embedding`). A version
exported before training statistics existed gets them without retraining:

    python -m rmserve.training.stats models/hh-harmless/1

scores the version's own training responses (the data and lines its manifest's `training`
records) with its served `model.onnx`, checks that this reproduces the manifest's
normalization, and adds `training_stats` to the manifest; model.onnx and its sha256 stay as
they are.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rmserve.core.embedding import DEFAULT_RANK, EMBEDDING_FILE, EmbeddingGaussian
from rmserve.core.formats import InputFormat
from rmserve.core.manifest import (
    MODEL_FILE,
    EmbeddingStats,
    Manifest,
    Normalization,
    Quantiles,
    TrainingStats,
    file_digests,
)
from rmserve.core.repository import verify_version
from rmserve.core.tokenizer import pad_batch
from rmserve.engine.runtime import Scorer
from rmserve.engine.session import OnnxScorer
from rmserve.training.data import Comparison, LineRange, read_comparisons
from rmserve.training.evaluate import length_batches

ONNX_THREADS = 2
# Normalization recomputed from the same responses with the same graph agrees to float noise.
REPRODUCE_TOLERANCE = 1e-4


def measure_training(
    scorer: OnnxScorer,
    input_format: InputFormat,
    comparisons: Sequence[Comparison],
    pad_id: int,
    version_dir: Path,
    data: str | None,
) -> tuple[Normalization, TrainingStats]:
    """Every training response through the served graph: normalization and the flags' statistics.

    When the graph exports an embedding, the Gaussian of the responses' embeddings goes to
    `embedding_stats.npz` in `version_dir` (list it in the manifest's files afterwards).
    """
    encodings = input_format.encode([exchange for c in comparisons for exchange in c.exchanges()])
    raw, embeddings = score_and_embed_sequences(scorer, [encoding.input_ids for encoding in encodings], pad_id)
    stats = TrainingStats(
        responses=len(raw),
        raw_score=Quantiles.of(raw.tolist()),
        response_tokens=Quantiles.of([float(encoding.response_tokens) for encoding in encodings]),
        data=data,
        embedding=None if embeddings is None else write_embedding_stats(embeddings, version_dir),
    )
    return normalization_of(raw), stats


def score_and_embed_sequences(
    scorer: Scorer, sequences: Sequence[Sequence[int]], pad_id: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """Raw rewards [n] and, when the graph exports them, embeddings [n, dim] of token sequences, batched by length."""
    raw = np.zeros(len(sequences))
    embeddings: np.ndarray | None = None
    for chunk in length_batches(sequences):
        input_ids, attention_mask = pad_batch([sequences[i] for i in chunk], pad_id)
        if scorer.embedding_output is None:
            raw[chunk] = scorer(input_ids, attention_mask)
            continue
        raw[chunk], embedded = scorer.score_and_embed(input_ids, attention_mask)
        if embeddings is None:
            embeddings = np.zeros((len(sequences), embedded.shape[1]))
        embeddings[chunk] = embedded
    return raw, embeddings


def write_embedding_stats(embeddings: np.ndarray, version_dir: Path) -> EmbeddingStats:
    """Fit the Gaussian of the training embeddings [responses, dim], save it, and describe it for the manifest."""
    gaussian = EmbeddingGaussian.fit(embeddings, DEFAULT_RANK)
    gaussian.save(version_dir / EMBEDDING_FILE)
    distances = gaussian.distances(embeddings)  # [responses]
    return EmbeddingStats(dim=gaussian.dim, rank=gaussian.rank, distance=Quantiles.of(distances.tolist()))


def normalization_of(raw: np.ndarray) -> Normalization:
    return Normalization(mean=float(raw.mean()), std=float(max(raw.std(), 1e-6)))


def add_training_stats(version_dir: Path) -> Manifest:
    """Score a version's own training responses and write `training_stats` into its manifest."""
    manifest = Manifest.read(version_dir)
    if manifest.training is None:
        raise ValueError(f"{version_dir}: the manifest records no training data to compute statistics from")
    data, lines = Path(manifest.training.data), manifest.training.lines
    input_format = verify_version(version_dir).format
    comparisons = read_comparisons(data, None if lines is None else LineRange.parse(lines), input_format.layouts)
    scorer = OnnxScorer(version_dir / MODEL_FILE, ONNX_THREADS)
    described = f"{data.name} lines {lines}" if lines else data.name
    recomputed, stats = measure_training(
        scorer, input_format, comparisons, manifest.tokens.pad_id, version_dir, described
    )
    expected = manifest.normalization
    if not np.allclose([recomputed.mean, recomputed.std], [expected.mean, expected.std], rtol=REPRODUCE_TOLERANCE):
        raise ValueError(
            f"{version_dir}: scoring {data} lines {lines} gives normalization {recomputed}, the manifest says "
            f"{expected}: these are not the responses the version was normalized on"
        )
    updated = manifest.model_copy(update={"training_stats": stats, "files": file_digests(version_dir)})
    updated.write(version_dir)
    return updated


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("version_dirs", nargs="+", type=Path, help="model version directories")
    for version_dir in parser.parse_args(argv).version_dirs:
        stats = add_training_stats(version_dir).training_stats
        assert stats is not None
        print(
            f"{version_dir}: {stats.responses} responses; raw score {stats.raw_score}; tokens {stats.response_tokens}"
        )


if __name__ == "__main__":
    main()
