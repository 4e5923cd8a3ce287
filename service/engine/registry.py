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
from pathlib import Path

import numpy as np

from rmserve import metrics
from rmserve.config import Settings
from rmserve.core.conversation import Exchange
from rmserve.core.repository import InvalidModel, is_model_name, repository_entries
from rmserve.core.transcript import Transcript
from rmserve.engine.batcher import Batcher, ItemScore
from rmserve.engine.flags import INJECTED_TURN, FlagColumns, FlagRules, item_flags
from rmserve.engine.review import ReviewBuffer
from rmserve.engine.telemetry import telemetry_for
from rmserve.engine.version import ModelVersion, load_model
from rmserve.errors import DeadlineExceeded, ModelNotFound

log = logging.getLogger(__name__)

REVIEW_LAYOUT = Transcript()  # how a prompt that came as turns is written into review records


@dataclass(frozen=True)
class Scored:
    """Per-item results of one scoring call, in request order."""

    raw_scores: np.ndarray  # [items]
    scores: np.ndarray  # [items], normalized
    truncated: list[bool]
    tokens: list[int]
    response_tokens: list[int]  # the whole response's tokens, before any truncation
    flag_columns: FlagColumns  # flag name -> bool [items], one per flag the version checks
    ood_distances: np.ndarray | None = None  # [items]: embedding distances, when the version measures them

    @property
    def injected_turn(self) -> list[bool]:
        """Per item, whether the response itself writes turn markers (scored whole, never split)."""
        return [bool(injected) for injected in self.flag_columns[INJECTED_TURN].tolist()]

    @property
    def flags(self) -> list[list[str]]:
        """Per item, the flags it raised."""
        return item_flags(self.flag_columns, len(self.tokens))


class ServedModel:
    """A loaded model version plus the batcher whose executor threads share its one session."""

    def __init__(self, version: ModelVersion, settings: Settings):
        self.version = version
        self.batcher = Batcher(
            model=version.name,
            score_fn=version.score_batch,
            pad_id=version.manifest.tokens.pad_id,
            max_batch_tokens=settings.max_batch_tokens,
            max_queue_tokens=settings.max_queue_tokens,
            max_padding_ratio=settings.max_padding_ratio,
            max_batch_size=settings.max_batch_size,
            executors=settings.executor_count(),
            tokens_per_second=version.tokens_per_second,
        )
        manifest = version.manifest
        self.flag_rules = FlagRules(manifest.training_stats)
        self.telemetry = telemetry_for(manifest, self.flag_rules.names, settings.telemetry_window)
        self.review = ReviewBuffer(settings.review_prompts) if settings.review_prompts else None

    @property
    def name(self) -> str:
        return self.version.name

    def score(self, exchanges: Sequence[Exchange], deadline: float) -> Scored:
        """Lay out and tokenize in the model's input format, queue, wait until `deadline` (monotonic s), normalize."""
        encodings = self.version.format.encode(exchanges)
        futures = self.batcher.submit([encoding.input_ids for encoding in encodings], deadline)
        results = wait_all(futures, deadline)
        raw_scores = np.array([result.raw for result in results], dtype=np.float64)
        distances = None
        if self.version.embedding is not None:
            distances = np.array([result.distance for result in results], dtype=np.float64)
        scores = self.version.normalize(raw_scores)
        truncated = [encoding.truncated for encoding in encodings]
        response_tokens = [encoding.response_tokens for encoding in encodings]
        score_histogram = metrics.SCORES.labels(self.name)  # one label lookup per request, not per item
        for score in scores.tolist():
            score_histogram.observe(score)
        if any(truncated):
            metrics.TRUNCATIONS.labels(self.name).inc(sum(truncated))
        injected = [exchange.injected_turn for exchange in exchanges]
        flag_columns = self.flag_rules.columns(raw_scores, response_tokens, truncated, injected, distances)
        tokens = [len(encoding.input_ids) for encoding in encodings]
        scored = Scored(raw_scores, scores, truncated, tokens, response_tokens, flag_columns, distances)
        responses = [exchange.response for exchange in exchanges]
        if self.telemetry is not None:
            self.telemetry.observe(raw_scores, response_tokens, flag_columns, responses)
            self.telemetry.maybe_publish()
        if self.review is not None:
            self.review.observe([review_prompt(exchange) for exchange in exchanges], responses, scores, scored.flags)
        return scored


def review_prompt(exchange: Exchange) -> str:
    """The prompt as review records carry it: as the client wrote it, or its turns as an HH transcript."""
    return exchange.prompt_text if exchange.prompt_text is not None else REVIEW_LAYOUT.render_prompt(exchange.prompt)


def wait_all(futures: Sequence[Future[ItemScore]], deadline: float) -> list[ItemScore]:
    """Results in order; when any item fails or the deadline passes, cancel the rest so it is never scored."""
    try:
        return [future.result(timeout=max(0.0, deadline - time.monotonic())) for future in futures]
    except FutureTimeout:
        cancel_all(futures)
        raise DeadlineExceeded("the request's deadline passed before all its items were scored") from None
    except BaseException:
        cancel_all(futures)
        raise


def cancel_all(futures: Sequence[Future[ItemScore]]) -> None:
    """Cancel every future still waiting in the queue (one already in a batch runs to its end)."""
    for future in futures:
        future.cancel()


def _model_dirs(repository: Path) -> list[str]:
    """The repository's model directories; the other directories are logged and counted."""
    names, ignored = repository_entries(repository)
    for entry in ignored:
        log.warning("ignoring %s: not a model directory", repository / entry)
        metrics.REPOSITORY_REFUSED.labels(entry, "not_a_model").set(1)
    return names


class ModelRegistry:
    """Loads the configured models from the repository and starts their batchers."""

    def __init__(self, models: dict[str, ServedModel], default: str, skipped: list[str] | None = None):
        self.models = models
        self.default = default
        self.skipped = skipped or []  # models of the repository left out because no version loads

    @classmethod
    def load(cls, settings: Settings) -> ModelRegistry:
        """Every model in the repository that loads (the others are logged, counted and skipped),
        or exactly RMSERVE_MODELS, where one that cannot load stops start-up."""
        explicit = list(settings.models)
        for name in explicit:
            if not is_model_name(name):
                raise InvalidModel(f"RMSERVE_MODELS: {name!r} is not a model name (letters, digits, '.', '_', '-')")
        names = explicit or _model_dirs(settings.model_repository)
        threads = settings.intra_op_threads()
        models, skipped = {}, []
        for name in names:
            try:
                version = load_model(settings.model_repository, name, threads, settings.pinned_version(name))
            except InvalidModel as error:
                if explicit:
                    raise InvalidModel(f"{error} (named in RMSERVE_MODELS, so the server does not start)") from None
                log.error("skipping model %s: %s", name, error)
                metrics.REPOSITORY_REFUSED.labels(name, "no_valid_version").set(1)
                skipped.append(name)
                continue
            models[name] = ServedModel(version, settings)
            metrics.register_model(name, version.manifest.version, version.manifest.sha256)
        if not models:
            raise InvalidModel(
                f"no model in {settings.model_repository} could be loaded (skipped: {', '.join(skipped) or 'none'}); "
                "the log says why for each"
            )
        default = settings.default_model or next(iter(models))
        if default not in models:
            raise ValueError(f"RMSERVE_DEFAULT_MODEL={default!r} is not among the loaded models {sorted(models)}")
        return cls(models, default, skipped)

    def start(self) -> ModelRegistry:
        for model in self.models.values():
            model.batcher.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        for model in self.models.values():
            model.batcher.stop(timeout)

    def seconds_to_drain(self) -> float:
        """How long until every queue has scored what it holds now, at the measured rates."""
        return max(model.batcher.seconds_to_score(model.batcher.queued_tokens) for model in self.models.values())

    def publish_telemetry(self) -> None:
        """Bring this process's drift gauges up to date (a /metrics scrape)."""
        for model in self.models.values():
            if model.telemetry is not None:
                model.telemetry.publish()

    def unhealthy(self) -> list[str]:
        """Models whose batcher is not running its loop (restarting after a crash, or ended)."""
        return sorted(name for name, model in self.models.items() if not model.batcher.healthy)

    def get(self, name: str | None) -> ServedModel:
        model = self.models.get(name or self.default)
        if model is None:
            raise ModelNotFound(str(name), sorted(self.models))
        return model
