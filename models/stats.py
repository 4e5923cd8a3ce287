"""What the training responses look like to the served graph: normalization and flag statistics.

`rmserve export` computes both from the same scores of every training response. A version
exported before training statistics existed gets them without retraining:

    python -m rmserve.training.stats models/repository/hh-harmless/1

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

from rmserve.core.manifest import MODEL_FILE, Manifest, Normalization, Quantiles, TrainingStats
from rmserve.core.repository import verify_version
from rmserve.engine.session import OnnxScorer
from rmserve.training.data import Comparison, LineRange, read_comparisons
from rmserve.training.evaluate import EncodeFn, ScoreFn, score_sequences

ONNX_THREADS = 2
# Normalization recomputed from the same responses with the same graph agrees to float noise.
REPRODUCE_TOLERANCE = 1e-4


def score_responses(
    score_fn: ScoreFn, encode: EncodeFn, comparisons: Sequence[Comparison], pad_id: int
) -> tuple[np.ndarray, np.ndarray]:
    """Raw scores [responses] and response lengths in tokens [responses] of every response."""
    prompts = [c.prompt for c in comparisons for _ in c.responses]
    responses = [r for c in comparisons for r in c.responses]
    encodings = encode(prompts, responses)
    raw = score_sequences(score_fn, [encoding.input_ids for encoding in encodings], pad_id)
    return raw, np.array([encoding.response_tokens for encoding in encodings])


def normalization_of(raw: np.ndarray) -> Normalization:
    return Normalization(mean=float(raw.mean()), std=float(max(raw.std(), 1e-6)))


def training_stats_of(raw: np.ndarray, response_tokens: np.ndarray, data: str | None) -> TrainingStats:
    return TrainingStats(
        responses=len(raw),
        raw_score=Quantiles.of(raw.tolist()),
        response_tokens=Quantiles.of(response_tokens.tolist()),
        data=data,
    )


def add_training_stats(version_dir: Path) -> Manifest:
    """Score a version's own training responses and write `training_stats` into its manifest."""
    manifest = Manifest.read(version_dir)
    if manifest.training is None or "data" not in manifest.training:
        raise ValueError(f"{version_dir}: the manifest records no training data to compute statistics from")
    data, lines = Path(manifest.training["data"]), manifest.training.get("lines")
    input_format = verify_version(version_dir).format
    comparisons = read_comparisons(data, None if lines is None else LineRange.parse(lines), input_format.transcript)
    scorer = OnnxScorer(version_dir / MODEL_FILE, ONNX_THREADS)
    raw, response_tokens = score_responses(scorer, input_format.encode_texts, comparisons, manifest.tokens.pad_id)
    recomputed = normalization_of(raw)
    expected = manifest.normalization
    if not np.allclose([recomputed.mean, recomputed.std], [expected.mean, expected.std], rtol=REPRODUCE_TOLERANCE):
        raise ValueError(
            f"{version_dir}: scoring {data} lines {lines} gives normalization {recomputed}, the manifest says "
            f"{expected}: these are not the responses the version was normalized on"
        )
    described = f"{data.name} lines {lines}" if lines else data.name
    updated = manifest.model_copy(update={"training_stats": training_stats_of(raw, response_tokens, described)})
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
