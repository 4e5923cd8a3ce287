"""One served model version with its batcher: exchanges in, scores out.

The HTTP handlers and `rmserve score` both go through `ServedModel.score`, so offline and
online scores come from the same tokenizer, batcher and ONNX session. Scoring is two steps,
`submit` (lay out, tokenize, queue) and `collect` (wait, normalize, flag, watch), so an
ensemble queues its items in every member before it waits on any.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

import numpy as np

from rmserve import metrics
from rmserve.config import Settings
from rmserve.core.conversation import Exchange
from rmserve.core.ensemble_spec import Combined, Reward
from rmserve.core.formats import InputFormat
from rmserve.core.tokenizer import Encoding
from rmserve.core.transcript import Transcript
from rmserve.engine.batcher import Batcher, ItemScore
from rmserve.engine.flags import INJECTED_TURN, FlagColumns, FlagRules, item_flags
from rmserve.engine.review import ReviewBuffer
from rmserve.engine.telemetry import Telemetry, telemetry_for
from rmserve.engine.version import ModelVersion
from rmserve.errors import DeadlineExceeded

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
    ensemble: Combined | None = None  # an ensemble's members' normalized scores and their combinations
    reward: Reward | None = None  # which combination an ensemble's `scores` are

    @property
    def injected_turn(self) -> list[bool]:
        """Per item, whether the response itself writes turn markers (scored whole, never split)."""
        return [bool(injected) for injected in self.flag_columns[INJECTED_TURN].tolist()]

    @property
    def flags(self) -> list[list[str]]:
        """Per item, the flags it raised."""
        return item_flags(self.flag_columns, len(self.tokens))


@dataclass(frozen=True)
class Pending:
    """A request's items queued in one model's batcher: what `collect` needs to finish them."""

    exchanges: Sequence[Exchange]
    encodings: list[Encoding]
    futures: list[Future[ItemScore]]


class ServedModel:
    """A loaded model version plus the batcher whose executor threads share its one session."""

    served_version: int | None

    def __init__(self, version: ModelVersion, settings: Settings):
        self.version = version
        self.served_version = version.manifest.version
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

    @property
    def input_format(self) -> InputFormat:
        """How requests to this model are read (their text layouts) and laid out: the version's own format."""
        return self.version.format

    @property
    def flag_names(self) -> tuple[str, ...]:
        return self.flag_rules.names

    def score(self, exchanges: Sequence[Exchange], deadline: float) -> Scored:
        """Lay out and tokenize in the model's input format, queue, wait until `deadline` (monotonic s), normalize."""
        return self.collect(self.submit(exchanges, deadline), deadline)

    def submit(self, exchanges: Sequence[Exchange], deadline: float) -> Pending:
        """Lay out and tokenize in the model's input format and queue every item; nothing waits yet."""
        encodings = self.version.format.encode(exchanges)
        futures = self.batcher.submit([encoding.input_ids for encoding in encodings], deadline)
        return Pending(exchanges, encodings, futures)

    def collect(self, pending: Pending, deadline: float) -> Scored:
        """Wait for a submitted request's scores until `deadline` (monotonic s); normalize, flag and watch them."""
        exchanges, encodings = pending.exchanges, pending.encodings
        results = wait_all(pending.futures, deadline)
        raw_scores = np.array([result.raw for result in results], dtype=np.float64)
        distances = None
        if self.version.embedding is not None:
            distances = np.array([result.distance for result in results], dtype=np.float64)
        scores = self.version.normalize(raw_scores)
        truncated = [encoding.truncated for encoding in encodings]
        response_tokens = [encoding.response_tokens for encoding in encodings]
        if any(truncated):
            metrics.TRUNCATIONS.labels(self.name).inc(sum(truncated))
        injected = [exchange.injected_turn for exchange in exchanges]
        flag_columns = self.flag_rules.columns(raw_scores, response_tokens, truncated, injected, distances)
        tokens = [len(encoding.input_ids) for encoding in encodings]
        scored = Scored(raw_scores, scores, truncated, tokens, response_tokens, flag_columns, distances)
        watch(self.name, self.telemetry, self.review, exchanges, scored)
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
