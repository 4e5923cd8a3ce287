"""A model version ready to score: verified files plus its session (ONNX Runtime, or OpenVINO), warmed.

A version is served only if it verifies (`rmserve.core.repository`) and its graph gives one
finite score per row of a test batch (and, when the manifest has embedding statistics, an
embedding of their dim per row). A version that fails is logged and skipped; the
highest good version (or the pinned one) is served.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rmserve import metrics
from rmserve.config import ONNXRUNTIME
from rmserve.core.conversation import Exchange, Turn
from rmserve.core.embedding import EMBEDDING_OUTPUT, EmbeddingGaussian
from rmserve.core.formats import InputFormat
from rmserve.core.manifest import MODEL_FILE, Manifest
from rmserve.core.repository import InvalidModel, verify_version, version_dirs
from rmserve.core.tokenizer import Encoding, pad_batch
from rmserve.engine.batcher import FailedRow
from rmserve.engine.runtime import Scorer, open_scorer
from rmserve.errors import ServiceError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ItemScore:
    """What one item's future resolves to: its raw score, and its embedding distance when the version measures one."""

    raw: float
    distance: float | None = None


@dataclass(frozen=True)
class ModelVersion:
    """One loaded, verified model version: how to format, tokenize and score its inputs."""

    manifest: Manifest
    directory: Path
    format: InputFormat
    scorer: Scorer
    embedding: EmbeddingGaussian | None = None  # with embedding statistics: each item's distance is measured
    tokens_per_second: float = 0.0  # measured at load, so Retry-After is sensible from the first request

    @property
    def name(self) -> str:
        return self.manifest.name

    def normalize(self, raw_scores: np.ndarray) -> np.ndarray:
        normalization = self.manifest.normalization
        return (raw_scores - normalization.mean) / normalization.std

    def score_batch(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> list[ItemScore | FailedRow]:
        """The executors' score_fn: each row's raw score, with its embedding distance when the version measures one."""
        if self.embedding is None:
            scores = self.scorer(input_ids, attention_mask).tolist()  # the embedding output is not even fetched
            return [ItemScore(raw) if math.isfinite(raw) else _non_finite(raw, None) for raw in scores]
        raw_scores, embeddings = self.scorer.score_and_embed(input_ids, attention_mask)  # [batch], [batch, dim]
        rows = zip(raw_scores.tolist(), self.embedding.distances(embeddings).tolist(), strict=True)
        return [
            ItemScore(raw, distance) if math.isfinite(raw) and math.isfinite(distance) else _non_finite(raw, distance)
            for raw, distance in rows
        ]

    def distances(self, items: Sequence[ItemScore]) -> np.ndarray | None:
        """The items' embedding distances [items], or None when the version does not measure them."""
        if self.embedding is None:
            return None
        return np.array([item.distance for item in items], dtype=np.float64)


def _non_finite(raw: float, distance: float | None) -> FailedRow:
    return FailedRow(f"the model returned a non-finite score ({raw}, {distance})", "non_finite")


def load_version(
    directory: Path, intra_op_threads: int, prompt_cache_bytes: int = 0, runtime: str = ONNXRUNTIME, runs: int = 1
) -> ModelVersion:
    """Verify and load one version directory, or raise InvalidModel saying why; its graph runs on `runtime`,
    `runs` runs at once (the server's executors) of `intra_op_threads` threads each."""
    verified = verify_version(directory, prompt_cache_bytes)
    stats = verified.manifest.training_stats
    output = stats.embedding.output if stats is not None and stats.embedding is not None else EMBEDDING_OUTPUT
    try:
        scorer = open_scorer(runtime, verified.model_path, intra_op_threads, runs, output)
    except Exception as error:  # onnxruntime and openvino raise their own types; all mean "unusable"
        raise InvalidModel(f"{directory}: cannot load: {error}") from None
    model = ModelVersion(verified.manifest, directory, verified.format, scorer, verified.embedding)
    _check_graph(model)
    return dataclasses.replace(model, tokens_per_second=_measure_throughput(model))


def _check_graph(model: ModelVersion) -> None:
    """Run one tiny batch (this also warms the session): one finite score per row."""
    (encoding,) = _laid_out(model, _warm_up(words=1))
    input_ids, attention_mask = pad_batch([encoding.input_ids] * 2, model.manifest.tokens.pad_id)
    if model.embedding is not None:
        _check_embedding(model, model.embedding, input_ids, attention_mask)
    try:
        raw = model.scorer(input_ids, attention_mask)
    except Exception as error:
        raise InvalidModel(f"{model.directory}/{MODEL_FILE}: graph fails on a test batch: {error}") from None
    if not np.all(np.isfinite(raw)):
        raise InvalidModel(f"{model.directory}/{MODEL_FILE}: non-finite scores on a test batch: {raw}")


def _check_embedding(
    model: ModelVersion, gaussian: EmbeddingGaussian, input_ids: np.ndarray, attention_mask: np.ndarray
) -> None:
    """The graph has the embedding output the manifest names, as wide as the Gaussian and finite on the test batch."""
    if model.scorer.embedding_output is None:
        raise InvalidModel(
            f"{model.directory}/{MODEL_FILE}: the manifest has training_stats.embedding, the graph has no output "
            f"{EMBEDDING_OUTPUT!r}"
        )
    try:
        _, embeddings = model.scorer.score_and_embed(input_ids, attention_mask)
    except Exception as error:
        raise InvalidModel(f"{model.directory}/{MODEL_FILE}: graph fails on a test batch: {error}") from None
    if embeddings.shape[1] != gaussian.dim or not np.all(np.isfinite(embeddings)):
        raise InvalidModel(
            f"{model.directory}/{MODEL_FILE}: embedding output of shape {embeddings.shape} (finite: "
            f"{bool(np.all(np.isfinite(embeddings)))}) on a test batch; the embedding statistics have dim "
            f"{gaussian.dim}"
        )


def _measure_throughput(model: ModelVersion) -> float:
    """Real tokens per second of one warm, moderately sized batch (4 rows of up to 128 tokens)."""
    (encoding,) = _laid_out(model, _warm_up(words=64))
    row = encoding.input_ids[: min(model.manifest.max_length, 128)]
    input_ids, attention_mask = pad_batch([row] * 4, model.manifest.tokens.pad_id)
    started = time.perf_counter()
    model.score_batch(input_ids, attention_mask)  # [4, seq] -> [4]
    return input_ids.size / max(time.perf_counter() - started, 1e-6)


def _laid_out(model: ModelVersion, exchange: Exchange) -> list[Encoding]:
    try:
        return model.format.encode([exchange])
    except ServiceError as error:  # a chat template that refuses, fails on or overruns its budget for a warm-up item
        raise InvalidModel(f"{model.directory}: its input format cannot lay out a test item: {error.message}") from None


def _warm_up(words: int) -> Exchange:
    text = " ".join(["warm-up"] * words)
    return Exchange((Turn("user", text),), text, "warm-up")


def load_model(
    repository: Path,
    name: str,
    intra_op_threads: int,
    pinned: int | None = None,
    prompt_cache_bytes: int = 0,
    runtime: str = ONNXRUNTIME,
    runs: int = 1,
) -> ModelVersion:
    """The pinned version, or the highest version that verifies; log every version skipped."""
    candidates = version_dirs(repository, name)
    if pinned is not None:
        candidates = [path for path in candidates if int(path.name) == pinned]
    refusals = []
    for directory in candidates:
        try:
            model = load_version(directory, intra_op_threads, prompt_cache_bytes, runtime, runs)
        except InvalidModel as error:
            log.error("refusing model version: %s", error)
            metrics.REPOSITORY_REFUSED.labels(f"{name}/{directory.name}", "invalid_version").set(1)
            refusals.append(str(error))
            continue
        manifest = model.manifest
        log.info("loaded model %s version %s (sha256 %s, %s)", name, manifest.version, manifest.sha256[:12], runtime)
        return model
    wanted = f"version {pinned}" if pinned is not None else "version"
    why = f" ({'; '.join(refusals)})" if refusals else ""
    raise InvalidModel(f"{repository / name}: no valid {wanted}{why}")
