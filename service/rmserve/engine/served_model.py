"""One served model version with its batcher: exchanges in, scores out.

Scoring is two steps, `submit` (lay out, tokenize, queue) and `collect` (wait, normalize, flag,
watch), so an ensemble queues its items in every member before it waits on any.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from rmserve import metrics
from rmserve.config import Settings
from rmserve.core.chat_template import render_deadline
from rmserve.core.conversation import Exchange
from rmserve.core.ensemble_spec import Reward
from rmserve.core.formats import InputFormat
from rmserve.core.tokenizer import Encoding
from rmserve.core.transcript import Transcript
from rmserve.engine.batcher import Batcher
from rmserve.engine.flags import FlagRules
from rmserve.engine.review import ReviewBuffer
from rmserve.engine.servable import ModelInfo, Scored, Servable, require_finite, review_buffer
from rmserve.engine.telemetry import Telemetry, telemetry_for
from rmserve.engine.version import ItemScore, ModelVersion
from rmserve.errors import DeadlineExceeded

REVIEW_LAYOUT = Transcript()  # how a prompt that came as turns is written into review records

Result = TypeVar("Result")


@dataclass(frozen=True)
class Pending:
    """A request's items queued in one model's batcher: what `collect` needs to finish them."""

    exchanges: Sequence[Exchange]
    encodings: list[Encoding]
    futures: list[Future[ItemScore]]


class ServedModel(Servable):
    """A loaded model version plus the batcher whose executor threads share its one session."""

    def __init__(self, version: ModelVersion, settings: Settings):
        manifest = version.manifest
        self.version = version
        self.name = version.name
        self.served_version = manifest.version
        self.runtime = settings.runtime
        self.batcher: Batcher[ItemScore] = Batcher(
            model=version.name,
            score_fn=version.score_batch,
            pad_id=manifest.tokens.pad_id,
            max_batch_tokens=settings.batch_tokens(manifest.batch_tokens),
            max_queue_tokens=settings.max_queue_tokens,
            max_padding_ratio=settings.max_padding_ratio,
            max_batch_size=settings.max_batch_size,
            executors=settings.executor_count(),
            tokens_per_second=version.tokens_per_second,
        )
        self.flag_rules = FlagRules(manifest.training_stats)
        self.flag_names = self.flag_rules.names
        self.telemetry = telemetry_for(manifest, self.flag_names, settings.telemetry_window)
        self.review_buffer = review_buffer(settings.review_prompts)

    @property
    def input_format(self) -> InputFormat:
        """How requests to this model are read (their text layouts) and laid out: the version's own format."""
        return self.version.format

    @property
    def batchers(self) -> tuple[Batcher[Any], ...]:
        return (self.batcher,)

    @property
    def max_lengths(self) -> tuple[int, ...]:
        return (self.version.format.max_length,)

    def metadata(self) -> ModelInfo:
        manifest = self.version.manifest
        return ModelInfo(
            name=self.name,
            version=manifest.version,
            input_format=self.input_format.style,
            evaluation=manifest.evaluation.model_dump(),
            sha256=manifest.sha256,
            max_length=manifest.max_length,
            normalization=manifest.normalization,
            quantization=manifest.quantization,
            training_stats=manifest.training_stats,
            max_batch_tokens=self.batcher.max_batch_tokens,
            runtime=self.runtime,
        )

    def score(self, exchanges: Sequence[Exchange], deadline: float, reward: Reward | None = None) -> Scored:
        """Lay out and tokenize in the model's input format, queue, wait until `deadline` (monotonic s), normalize."""
        self.reward_choice(reward)  # one score: any reward choice is a 422 naming `reward`
        return self.collect(self.submit(exchanges, deadline), deadline)

    def submit(self, exchanges: Sequence[Exchange], deadline: float) -> Pending:
        """Lay out and tokenize in the model's input format and queue every item; nothing waits yet."""
        with render_deadline(deadline):  # a chat template stops rendering when the request's deadline passes
            encodings = self.version.format.encode(exchanges)
        futures = self.batcher.submit([encoding.input_ids for encoding in encodings], deadline)
        return Pending(exchanges, encodings, futures)

    def collect(self, pending: Pending, deadline: float) -> Scored:
        """Wait for a submitted request's scores until `deadline` (monotonic s); normalize, flag and watch them."""
        exchanges, encodings = pending.exchanges, pending.encodings
        results = wait_all(pending.futures, deadline)
        raw_scores = np.array([result.raw for result in results], dtype=np.float64)
        distances = self.version.distances(results)
        scores = self.version.normalize(raw_scores)
        require_finite(self.name, exchanges, scores)
        truncated = [encoding.truncated for encoding in encodings]
        response_tokens = [encoding.response_tokens for encoding in encodings]
        if any(truncated):
            metrics.TRUNCATIONS.labels(self.name).inc(sum(truncated))
        injected = [exchange.injected_turn for exchange in exchanges]
        no_prompt = [exchange.no_prompt for exchange in exchanges]
        flag_columns = self.flag_rules.columns(raw_scores, response_tokens, truncated, injected, no_prompt, distances)
        tokens = [len(encoding.input_ids) for encoding in encodings]
        scored = Scored(raw_scores, scores, truncated, tokens, response_tokens, flag_columns, distances)
        watch(self.name, self.telemetry, self.review_buffer, exchanges, scored)
        return scored

    @staticmethod
    def cancel(pending: Pending) -> None:
        """Cancel a submitted request's items still waiting in the queue (another part of its request failed)."""
        cancel_all(pending.futures)


def watch(
    name: str,
    telemetry: Telemetry | None,
    review: ReviewBuffer | None,
    exchanges: Sequence[Exchange],
    scored: Scored,
) -> None:
    """Record a scored request in the score histogram, the drift window and the review buffer."""
    disagreement = None if scored.ensemble is None else scored.ensemble.std
    score_histogram = metrics.SCORES.labels(name)  # one label lookup per request, not per item
    for score in scored.scores.tolist():
        score_histogram.observe(score)
    responses = [exchange.response for exchange in exchanges]
    if telemetry is not None:
        telemetry.observe(scored.raw_scores, scored.response_tokens, scored.flag_columns, responses, disagreement)
        telemetry.maybe_publish()
    if review is not None:
        prompts = [review_prompt(exchange) for exchange in exchanges]
        review.observe(prompts, responses, scored.scores, scored.flags, disagreement)


def review_prompt(exchange: Exchange) -> str:
    """The prompt as review records carry it: as the client wrote it, or its turns as an HH transcript."""
    return exchange.prompt_text if exchange.prompt_text is not None else REVIEW_LAYOUT.render_prompt(exchange.prompt)


def wait_all(futures: Sequence[Future[Result]], deadline: float) -> list[Result]:
    """Results in order; when any item fails or the deadline passes, cancel the rest so it is never scored."""
    try:
        return [future.result(timeout=max(0.0, deadline - time.monotonic())) for future in futures]
    except FutureTimeout:
        cancel_all(futures)
        raise DeadlineExceeded("the request's deadline passed before all its items were scored") from None
    except BaseException:
        cancel_all(futures)
        raise


def cancel_all(futures: Sequence[Future[Any]]) -> None:
    """Cancel every future still waiting in the queue (one already in a batch runs to its end)."""
    for future in futures:
        future.cancel()
