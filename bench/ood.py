"""What the out-of-distribution flag costs at serving time, and how often it fires where it should not.

`python -m bench.ood REPOSITORY [NAME]` (from the project root; a version exported with an embedding
output) prints, for docs/benchmarks.md:
- the cost of the second output plus the distances: the same padded batches through the version
  with and without its embedding statistics (without, the embedding output is never fetched),
  call by call in pairs, in one run, per batch size; and through `ServedModel.score` (batcher,
  flags and all) the same way;
- the false-positive rate of the cut by 5-fold cross-validation on the training responses (fit on
  four folds, cut at their own p99, count the fifth fold above it), and on the held-out lines
  1801-2312 (touched once, to report the number of the final choice);
- the distances and flags of a few hand-made out-of-distribution responses.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np

from rmserve.config import Settings
from rmserve.core.conversation import Exchange
from rmserve.core.embedding import EmbeddingGaussian
from rmserve.core.layouts import prompt_turns
from rmserve.core.tokenizer import pad_batch
from rmserve.engine.registry import ServedModel
from rmserve.engine.version import ModelVersion, load_model
from rmserve.training.data import LineRange, read_comparisons
from rmserve.training.stats import score_and_embed_sequences

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "hh-rlhf-harmless-test.jsonl.gz"
BATCH_SIZES = (1, 8, 64)
FOLDS = 5
Variant = TypeVar("Variant")
STRANGE = [
    "Als KI-Assistent kann ich Ihnen dabei leider nicht helfen, aber ich erkläre gern die Gesetzeslage.",
    "def handler(event):\n    return {'statusCode': 200, 'body': json.dumps(event)}",
    "<div class='answer'><span>Sure!</span><br/><a href='#'>click here</a></div>",
    "ok ok ok ok ok ok ok ok ok ok ok ok ok ok ok ok ok ok ok ok ok ok ok ok",
    "zxqv blorp fnord quux wibble snark glorp vrrp",
]


def exchanges(lines: LineRange, model: ModelVersion) -> list[Exchange]:
    return [exchange for c in read_comparisons(DATA, lines, model.format.layouts) for exchange in c.exchanges()]


def paired(
    label: str, step: Callable[[Variant, int], None], variants: dict[str, Variant], calls: int, size: int
) -> None:
    """Time call after call with and without embedding statistics back to back, alternating which goes first
    (load on a shared machine drifts slowly; a pair shares it), and print one table row."""
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for call in range(-2, calls):  # two warm-up pairs, not counted
        for name in list(variants) if call % 2 == 0 else list(reversed(variants)):
            start = time.perf_counter()
            step(variants[name], max(call, 0))
            if call >= 0:
                seconds[name].append(time.perf_counter() - start)
    with_us, without_us = (statistics.median(seconds[name]) / size * 1e6 for name in ("with", "without"))
    extra_us = statistics.median(a - b for a, b in zip(seconds["with"], seconds["without"], strict=True)) / size * 1e6
    throughput = sum(seconds["without"]) / sum(seconds["with"])
    print(f"| {label} | {calls} | {without_us:.0f} | {with_us:.0f} | {extra_us:+.1f} | {throughput:.3f} |")


def without_embedding(version: ModelVersion) -> ModelVersion:
    """The same version as if it had no embedding statistics: the embedding output is never fetched."""
    stats = version.manifest.training_stats
    assert stats is not None
    manifest = version.manifest.model_copy(update={"training_stats": stats.model_copy(update={"embedding": None})})
    return dataclasses.replace(version, manifest=manifest, embedding=None)


def serving_cost(version: ModelVersion, items: list[Exchange]) -> None:
    embedding = version.embedding
    assert embedding is not None
    variants = {"with": version, "without": without_embedding(version)}
    sequences = [encoding.input_ids for encoding in version.format.encode(items)]
    print(
        "| path | pairs of calls | µs per item without | µs per item with | paired extra µs per item (median) "
        "| throughput with / without |"
    )
    print("|---|---|---|---|---|---|")
    for size in BATCH_SIZES:
        batches = [pad_batch(sequences[i : i + size], version.manifest.tokens.pad_id) for i in range(0, 256, size)]

        def run_batch(model: ModelVersion, call: int, batches: list = batches) -> None:
            model.score_batch(*batches[call % len(batches)])

        paired(f"session run + distances, batch {size}", run_batch, variants, max(16, 512 // size), size)
    settings = Settings.from_env({}, telemetry_window=0, executors=1)
    served = {name: ServedModel(model, settings) for name, model in variants.items()}
    for model in served.values():
        model.batcher.start()
    try:
        for size in (1, 8):

            def score(model: ServedModel, call: int, size: int = size) -> None:
                offset = call * size % 256
                model.score(items[offset : offset + size], time.monotonic() + 300)

            paired(f"ServedModel.score (batcher, flags), {size} per call", score, served, 512 // size, size)
    finally:
        for model in served.values():
            model.batcher.stop(5)
    embeddings = np.random.default_rng(0).normal(size=(64, embedding.dim))
    start = time.perf_counter()
    for _ in range(1000):
        embedding.distances(embeddings)
    print(f"| distances alone, batch 64 | {(time.perf_counter() - start) / 64_000 * 1e6:.2f} µs per item |")


def embeddings_of(version: ModelVersion, items: list[Exchange]) -> np.ndarray:
    sequences = [encoding.input_ids for encoding in version.format.encode(items)]
    _, embeddings = score_and_embed_sequences(version.scorer, sequences, version.manifest.tokens.pad_id)
    assert embeddings is not None
    return embeddings


def false_positives(version: ModelVersion) -> None:
    stats = version.manifest.training_stats
    assert version.embedding is not None and stats is not None and stats.embedding is not None
    training = embeddings_of(version, exchanges(LineRange(1, 1800), version))
    folds = np.random.default_rng(0).permutation(len(training)) % FOLDS
    rates = []
    for fold in range(FOLDS):
        gaussian = EmbeddingGaussian.fit(training[folds != fold])
        cut = np.quantile(gaussian.distances(training[folds != fold]), 0.99)
        rates.append(float(np.mean(gaussian.distances(training[folds == fold]) > cut)))
    spread = f"folds {min(rates):.2%}-{max(rates):.2%}"
    print(f"| 5-fold CV on the {len(training)} training responses | {np.mean(rates):.2%} ({spread}) |")
    held_out = embeddings_of(version, exchanges(LineRange(1801, 2312), version))
    cut = stats.embedding.distance.p99
    held_out_rate = np.mean(version.embedding.distances(held_out) > cut)
    print(f"| held-out lines 1801-2312, {len(held_out)} responses | {held_out_rate:.2%} |")
    strange = [
        Exchange(prompt_turns("\n\nHuman: Can you help me?\n\nAssistant:", "prompt"), text, "prompt")
        for text in STRANGE
    ]
    for text, distance in zip(STRANGE, version.embedding.distances(embeddings_of(version, strange)), strict=True):
        print(f"| {text[:40]!r} | {distance:.1f} (cut {cut:.1f}) | {'flagged' if distance > cut else 'not flagged'} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("repository", type=Path)
    parser.add_argument("name", nargs="?", default="hh-harmless")
    arguments = parser.parse_args(argv)
    version = load_model(arguments.repository, arguments.name, intra_op_threads=1)
    if version.embedding is None:
        raise SystemExit(f"{arguments.name}: this version has no embedding statistics to measure")
    serving_cost(version, exchanges(LineRange(1, 128), version))
    false_positives(version)


if __name__ == "__main__":
    main()
