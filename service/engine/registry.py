"""The models a process serves, each with its batcher: text pairs in, scores out.

The HTTP handlers and `rmserve score` both go through `ServedModel.score`, so offline and
online scores come from the same tokenizer, batcher and ONNX session.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

import numpy as np

from rmserve import metrics
from rmserve.config import Settings
from rmserve.core.conversation import Exchange
from rmserve.core.repository import model_names
from rmserve.engine.batcher import Batcher
from rmserve.engine.version import ModelVersion, load_model
from rmserve.errors import DeadlineExceeded, ModelNotFound

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scored:
    """Per-item results of one scoring call, in request order."""

    raw_scores: np.ndarray  # [items]
    scores: np.ndarray  # [items], normalized
    truncated: list[bool]
    tokens: list[int]
    injected_turn: list[bool]


class ServedModel:
    """A loaded model version plus the batcher thread that owns its session."""

    def __init__(self, version: ModelVersion, settings: Settings):
        self.version = version
        self.batcher = Batcher(
            model=version.name,
            score_fn=version.scorer,
            pad_id=version.manifest.tokens.pad_id,
            max_batch_tokens=settings.max_batch_tokens,
            max_queue_tokens=settings.max_queue_tokens,
            max_padding_ratio=settings.max_padding_ratio,
            max_batch_size=settings.max_batch_size,
        )

    @property
    def name(self) -> str:
        return self.version.name

    def score(self, exchanges: Sequence[Exchange], deadline: float) -> Scored:
        """Lay out and tokenize in the model's input format, queue, wait until `deadline` (monotonic s), normalize."""
        encodings = self.version.format.encode(exchanges)
        futures = self.batcher.submit([encoding.input_ids for encoding in encodings], deadline)
        raw_scores = np.array(wait_all(futures, deadline), dtype=np.float64)
        scores = self.version.normalize(raw_scores)
        truncated = [encoding.truncated for encoding in encodings]
        for score in scores:
            metrics.SCORES.labels(self.name).observe(score)
        metrics.TRUNCATIONS.labels(self.name).inc(sum(truncated))
        tokens = [len(encoding.input_ids) for encoding in encodings]
        return Scored(raw_scores, scores, truncated, tokens, [exchange.injected_turn for exchange in exchanges])


def wait_all(futures: Sequence[Future[float]], deadline: float) -> list[float]:
    """Results in order; at the deadline, cancel what is left so it is never scored."""
    try:
        return [future.result(timeout=max(0.0, deadline - time.monotonic())) for future in futures]
    except FutureTimeout:
        for future in futures:
            future.cancel()
        raise DeadlineExceeded("the request's deadline passed before all its items were scored") from None


class ModelRegistry:
    """Loads the configured models from the repository and starts their batchers."""

    def __init__(self, models: dict[str, ServedModel], default: str):
        self.models = models
        self.default = default

    @classmethod
    def load(cls, settings: Settings) -> ModelRegistry:
        names = list(settings.models) or model_names(settings.model_repository)
        threads = settings.intra_op_threads()
        models = {}
        for name in names:
            version = load_model(settings.model_repository, name, threads, settings.pinned_version(name))
            models[name] = ServedModel(version, settings)
            metrics.register_model(name, version.manifest.version, version.manifest.sha256)
        if not models:
            raise ValueError(f"no models to serve in {settings.model_repository}")
        default = settings.default_model or names[0]
        if default not in models:
            raise ValueError(f"RMSERVE_DEFAULT_MODEL={default!r} is not among the loaded models {sorted(models)}")
        return cls(models, default)

    def start(self) -> ModelRegistry:
        for model in self.models.values():
            model.batcher.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        for model in self.models.values():
            model.batcher.stop(timeout)

    def get(self, name: str | None) -> ServedModel:
        model = self.models.get(name or self.default)
        if model is None:
            raise ModelNotFound(str(name), sorted(self.models))
        return model
