"""Continuous batching: one thread per model drains the queue and never waits to fill.

Request handlers `submit` token sequences and get one future per item. The batcher thread
takes everything queued, drops what expired or was cancelled, and runs one sub-batch at a
time: the oldest waiting item plus the items closest to it in length, as long as the
sub-batch stays under the padded-token budget and its padding stays bounded. Anchoring on
the oldest item means long items are never starved by a stream of short ones.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from rmserve import metrics
from rmserve.core.tokenizer import pad_batch
from rmserve.errors import DeadlineExceeded, InferenceFailed, NotReady, PayloadTooLarge, QueueFull

log = logging.getLogger(__name__)

# (input_ids [batch, seq], attention_mask [batch, seq]) -> raw scores [batch]
ScoreFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(eq=False)
class Entry:
    """One item waiting in the queue; it carries its own reply channel."""

    input_ids: list[int]
    deadline: float
    enqueued: float
    future: Future[float] = field(default_factory=Future)

    @property
    def tokens(self) -> int:
        return len(self.input_ids)


def cut_batch(
    lengths: Sequence[int], anchor: int, max_batch_tokens: int, max_padding_ratio: float, max_rows: int
) -> list[int]:
    """Indices of a sub-batch around `anchor`, grown towards the nearest lengths.

    A candidate joins while the sub-batch has fewer than `max_rows` rows, and rows x width
    stays within `max_batch_tokens` and within `max_padding_ratio` x the real tokens.
    The anchor alone is always a valid sub-batch.
    """
    order = sorted(range(len(lengths)), key=lambda index: lengths[index])
    low = high = order.index(anchor)
    real_tokens = lengths[anchor]
    while high - low + 1 < max_rows:
        neighbours = [position for position in (low - 1, high + 1) if 0 <= position < len(order)]
        neighbours.sort(key=lambda position: abs(lengths[order[position]] - lengths[anchor]))
        for position in neighbours:
            new_low, new_high = min(low, position), max(high, position)
            padded = (new_high - new_low + 1) * lengths[order[new_high]]
            real = real_tokens + lengths[order[position]]
            if padded <= max_batch_tokens and padded <= real * max_padding_ratio:
                low, high, real_tokens = new_low, new_high, real
                break
        else:
            break
    return order[low : high + 1]


class Batcher:
    """Owns the queue of one model and the thread that scores it."""

    def __init__(
        self,
        model: str,
        score_fn: ScoreFn,
        pad_id: int,
        max_batch_tokens: int,
        max_queue_tokens: int,
        max_padding_ratio: float,
        max_batch_size: int = 64,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.model = model
        self.score_fn = score_fn
        self.pad_id = pad_id
        self.max_batch_tokens = max_batch_tokens
        self.max_queue_tokens = max_queue_tokens
        self.max_padding_ratio = max_padding_ratio
        self.max_batch_size = max_batch_size
        self.clock = clock
        self._condition = threading.Condition()
        self._incoming: list[Entry] = []
        self._queued_tokens = 0  # accepted and not yet resolved
        self._tokens_per_second = 0.0  # moving average, for Retry-After
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"batcher-{model}", daemon=True)

    def start(self) -> Batcher:
        self._thread.start()
        return self

    @property
    def queued_tokens(self) -> int:
        return self._queued_tokens

    def submit(self, sequences: Sequence[list[int]], deadline: float) -> list[Future[float]]:
        """Queue a request's items as a whole, or refuse it whole (PayloadTooLarge / QueueFull / NotReady)."""
        now = self.clock()
        entries = [Entry(list(ids), deadline, now) for ids in sequences]
        tokens = sum(entry.tokens for entry in entries)
        if tokens > self.max_queue_tokens:
            raise PayloadTooLarge(
                f"request needs {tokens} tokens but the queue holds at most {self.max_queue_tokens} "
                "(RMSERVE_MAX_QUEUE_TOKENS); split the request"
            )
        with self._condition:
            if self._stopping:
                raise NotReady("server is draining; retry on another replica")
            if self._queued_tokens + tokens > self.max_queue_tokens:
                raise QueueFull(
                    f"queue full: {self._queued_tokens} of {self.max_queue_tokens} tokens waiting, "
                    f"request needs {tokens}",
                    retry_after_s=self._retry_after(tokens),
                )
            self._incoming.extend(entries)
            self._queued_tokens += tokens
            self._condition.notify()
        metrics.QUEUE_ITEMS.labels(self.model).inc(len(entries))
        metrics.QUEUE_TOKENS.labels(self.model).inc(tokens)
        return [entry.future for entry in entries]

    def stop(self, timeout: float | None = None) -> None:
        """Refuse new work, finish what was accepted, then end the thread."""
        with self._condition:
            self._stopping = True
            self._condition.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _retry_after(self, tokens: int) -> int:
        backlog = self._queued_tokens + tokens - self.max_queue_tokens
        if self._tokens_per_second <= 0:
            return 1
        return max(1, math.ceil(backlog / self._tokens_per_second))

    def _run(self) -> None:
        pending: list[Entry] = []  # oldest first
        while True:
            with self._condition:
                while not self._incoming and not pending and not self._stopping:
                    self._condition.wait()
                if self._stopping and not self._incoming and not pending:
                    return
                pending.extend(self._incoming)
                self._incoming.clear()
            pending = self._drop_unwanted(pending)
            if not pending:
                continue
            lengths = [entry.tokens for entry in pending]
            chosen = set(cut_batch(lengths, 0, self.max_batch_tokens, self.max_padding_ratio, self.max_batch_size))
            batch = [entry for index, entry in enumerate(pending) if index in chosen]
            pending = [entry for index, entry in enumerate(pending) if index not in chosen]
            self._execute(batch)

    def _drop_unwanted(self, pending: list[Entry]) -> list[Entry]:
        """Fail expired items and forget cancelled ones; neither is ever scored."""
        now = self.clock()
        kept = []
        for entry in pending:
            if entry.future.cancelled():
                self._release([entry], "cancelled")
            elif entry.deadline <= now:
                entry.future.set_exception(DeadlineExceeded("deadline passed while the item was queued"))
                self._release([entry], "deadline_exceeded")
            else:
                kept.append(entry)
        return kept

    def _execute(self, batch: list[Entry]) -> None:
        # From here on a future can no longer be cancelled; one cancelled just now is dropped.
        cancelled = [entry for entry in batch if not entry.future.set_running_or_notify_cancel()]
        if cancelled:
            self._release(cancelled, "cancelled")
            batch = [entry for entry in batch if entry not in cancelled]
        if not batch:
            return
        now = self.clock()
        for entry in batch:
            metrics.QUEUE_WAIT_SECONDS.labels(self.model).observe(now - entry.enqueued)
        try:
            raw_scores = self._score(batch)
        except Exception:
            if len(batch) == 1:
                log.exception("inference failed for one item of %d tokens", batch[0].tokens)
                batch[0].future.set_exception(InferenceFailed("the model failed on this item"))
                self._release(batch, "inference_failed")
                return
            # Isolate the bad item: every other item still gets its score.
            log.warning("inference failed for a batch of %d; scoring its items one by one", len(batch))
            for entry in batch:
                self._execute_alone(entry)
            return
        for entry, raw in zip(batch, raw_scores, strict=True):
            self._resolve(entry, float(raw))
        self._release(batch, None)

    def _execute_alone(self, entry: Entry) -> None:
        try:
            (raw,) = self._score([entry])
        except Exception:
            log.exception("inference failed for one item of %d tokens", entry.tokens)
            entry.future.set_exception(InferenceFailed("the model failed on this item"))
            self._release([entry], "inference_failed")
            return
        self._resolve(entry, float(raw))
        self._release([entry], None)

    def _score(self, batch: list[Entry]) -> np.ndarray:
        input_ids, attention_mask = pad_batch([entry.input_ids for entry in batch], self.pad_id)
        real_tokens = sum(entry.tokens for entry in batch)
        started = time.perf_counter()
        raw_scores = np.asarray(self.score_fn(input_ids, attention_mask))  # [batch, seq] -> [batch]
        seconds = time.perf_counter() - started
        if raw_scores.shape != (len(batch),):
            raise ValueError(f"score_fn returned shape {raw_scores.shape} for {len(batch)} items")
        self._tokens_per_second = 0.8 * self._tokens_per_second + 0.2 * real_tokens / max(seconds, 1e-6)
        model = self.model
        metrics.INFERENCE_SECONDS.labels(model).observe(seconds)
        metrics.BATCH_SIZE.labels(model).observe(len(batch))
        metrics.BATCH_PADDED_TOKENS.labels(model).observe(input_ids.size)
        metrics.PADDING_EFFICIENCY.labels(model).observe(real_tokens / input_ids.size)
        metrics.TOKENS_SCORED.labels(model).inc(real_tokens)
        return raw_scores

    def _resolve(self, entry: Entry, raw: float) -> None:
        if math.isfinite(raw):
            entry.future.set_result(raw)
            metrics.ITEMS_SCORED.labels(self.model).inc()
        else:
            entry.future.set_exception(InferenceFailed(f"the model returned a non-finite score ({raw})"))
            metrics.ITEMS_FAILED.labels(self.model, "non_finite").inc()

    def _release(self, entries: list[Entry], failure: str | None) -> None:
        tokens = sum(entry.tokens for entry in entries)
        with self._condition:
            self._queued_tokens -= tokens
        metrics.QUEUE_ITEMS.labels(self.model).dec(len(entries))
        metrics.QUEUE_TOKENS.labels(self.model).dec(tokens)
        if failure is not None:
            metrics.ITEMS_FAILED.labels(self.model, failure).inc(len(entries))
