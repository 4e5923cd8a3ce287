"""Continuous batching: executor threads share one queue per model and never wait to fill.

Request handlers `submit` token sequences and get one future per item, resolving to whatever
the injected `score_fn` gives for the item's row (a model version's raw score and, where it
measures one, its embedding distance: the batcher never looks inside). Each executor thread,
when free, takes one sub-batch from the shared queue (`rmserve.engine.length_queue`, in time
independent of the queue's length): the oldest waiting item plus the items closest to it in
length, as long as the sub-batch stays under the padded-token budget and its padding stays
bounded; what expired or was cancelled among them is dropped on the way. Anchoring on the oldest
item means long items are never starved by a stream of short ones. With one executor per
core, one sub-batch per core is in flight: small transformers scale across concurrent
single-threaded runs far better than inside one run.

A request thread may cancel a future at any moment, so an executor claims each future
(`set_running_or_notify_cancel`) before it resolves it; only a claimed future is ever
resolved. No exception ends an executor silently: a crash of its loop is logged and counted,
fails the sub-batch it was running, and the loop restarts; the batcher reports itself
unhealthy until it runs again.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np

from rmserve import metrics
from rmserve.core.tokenizer import pad_batch
from rmserve.engine.length_queue import LengthQueue
from rmserve.errors import DeadlineExceeded, InferenceFailed, NotReady, PayloadTooLarge, QueueFull

log = logging.getLogger(__name__)

Result = TypeVar("Result")  # what one item's future resolves to


@dataclass(frozen=True)
class FailedRow:
    """A row the run gave no usable result for (a non-finite score): only its item fails, its batch mates do not."""

    message: str
    reason: str  # the `reason` label of rmserve_items_failed_total


# (input_ids [batch, seq], attention_mask [batch, seq]) -> one result (or FailedRow) per row
ScoreFn = Callable[[np.ndarray, np.ndarray], Sequence[Result | FailedRow]]

RESTART_DELAY_S = 0.1  # after a crash of an executor's loop; the batcher reports unhealthy meanwhile


@dataclass(eq=False)
class Entry(Generic[Result]):
    """One item waiting in the queue; it carries its own reply channel."""

    input_ids: list[int]
    deadline: float
    enqueued: float
    future: Future[Result] = field(default_factory=Future)
    waiting: bool = False  # in the queue: not yet taken into a sub-batch, dropped or cancelled
    released: bool = False  # its tokens have left the queue's count

    @property
    def tokens(self) -> int:
        return len(self.input_ids)


class Batcher(Generic[Result]):
    """Owns the queue of one model and the executor threads that score it."""

    def __init__(
        self,
        model: str,
        score_fn: ScoreFn[Result],
        pad_id: int,
        max_batch_tokens: int,
        max_queue_tokens: int,
        max_padding_ratio: float,
        max_batch_size: int = 64,
        executors: int = 1,
        clock: Callable[[], float] = time.monotonic,
        tokens_per_second: float = 0.0,
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
        self._queue: LengthQueue[Entry[Result]] = LengthQueue()  # executors cut sub-batches from it
        self._queued_tokens = 0  # accepted and not yet resolved
        self._tokens_per_second = tokens_per_second  # moving average of one run (seeded at load), for Retry-After
        self._stopping = False
        self._running = 0  # executors inside a run
        self._in_flight: dict[int, list[Entry[Result]]] = {}  # executor -> the sub-batch it is scoring
        self._crashed: set[int] = set()  # executors between a crash of their loop and its restart
        self.restarts = 0
        # This model's metric series, looked up once: a labels() call takes a lock and builds a key.
        self._queue_items = metrics.QUEUE_ITEMS.labels(model)
        self._queue_tokens = metrics.QUEUE_TOKENS.labels(model)
        self._queue_wait = metrics.QUEUE_WAIT_SECONDS.labels(model)
        self._inference_seconds = metrics.INFERENCE_SECONDS.labels(model)
        self._batch_size = metrics.BATCH_SIZE.labels(model)
        self._batch_padded_tokens = metrics.BATCH_PADDED_TOKENS.labels(model)
        self._padding_efficiency = metrics.PADDING_EFFICIENCY.labels(model)
        self._tokens_scored = metrics.TOKENS_SCORED.labels(model)
        self._items_scored = metrics.ITEMS_SCORED.labels(model)
        self._threads = [
            threading.Thread(target=self._supervise, args=(index,), name=f"batcher-{model}-{index}", daemon=True)
            for index in range(executors)
        ]

    def start(self) -> Batcher[Result]:
        for thread in self._threads:
            thread.start()
        return self

    @property
    def queued_tokens(self) -> int:
        return self._queued_tokens

    @property
    def healthy(self) -> bool:
        """Every executor runs its loop (false after a crash until it restarts, and once one has ended)."""
        return all(thread.is_alive() for thread in self._threads) and not self._crashed

    def submit(self, sequences: Sequence[list[int]], deadline: float) -> list[Future[Result]]:
        """Queue a request's items as a whole, or refuse it whole (PayloadTooLarge / QueueFull / NotReady)."""
        now = self.clock()
        entries: list[Entry[Result]] = [Entry(list(ids), deadline, now) for ids in sequences]
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
            for entry in entries:
                self._queue.push(entry)
            self._queued_tokens += tokens
            self._condition.notify()
        self._queue_items.inc(len(entries))
        self._queue_tokens.inc(tokens)
        for entry in entries:
            entry.future.add_done_callback(functools.partial(self._forget_if_cancelled, entry))
        return [entry.future for entry in entries]

    def _forget_if_cancelled(self, entry: Entry[Result], future: Future[Result]) -> None:
        """A request thread cancelled the item (its deadline, or a failed batch mate): its tokens leave the queue
        now, not when an executor reaches it."""
        if future.cancelled():
            with self._condition:
                self._queue.discard(entry)
            self._release([entry], "cancelled")

    def stop(self, timeout: float | None = None) -> None:
        """Refuse new work, finish what was accepted, then end the thread."""
        with self._condition:
            self._stopping = True
            self._condition.notify_all()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout)

    def seconds_to_score(self, tokens: int) -> float:
        """How long the queue needs to score `tokens` more than it holds, at the measured rate of its executors."""
        if self._tokens_per_second <= 0:
            return 1.0
        return tokens / (self._tokens_per_second * len(self._threads))

    def _retry_after(self, tokens: int) -> int:
        backlog = self._queued_tokens + tokens - self.max_queue_tokens
        return max(1, math.ceil(self.seconds_to_score(backlog)))

    def _supervise(self, executor: int) -> None:
        """Run one executor's loop until stopped; a crash is logged, counted, and the loop restarts."""
        while True:
            try:
                self._run(executor)
                return
            except BaseException:  # nothing may end this thread silently
                self._crashed.add(executor)
                self.restarts += 1
                log.exception("batcher of model %s crashed; failing its running batch and restarting", self.model)
                metrics.BATCHER_RESTARTS.labels(self.model).inc()
                running = self._in_flight.pop(executor, [])
                for entry in running:
                    self._fail(entry, InferenceFailed("the batcher failed while scoring this item"))
                self._release(running, "batcher_crashed")
                time.sleep(RESTART_DELAY_S)  # a loop that crashes at once again must not spin
                self._crashed.discard(executor)

    def _run(self, executor: int) -> None:
        """One executor: take a sub-batch from the shared queue, score it, repeat."""
        while True:
            with self._condition:
                while not self._queue and not self._stopping:
                    self._condition.wait()
                if not self._queue:  # stopping, and every accepted item is scored or in flight
                    return
                batch = self._take_batch()
                if self._queue:
                    self._condition.notify()  # work left: wake another executor
                self._running += 1
            try:
                if batch:
                    self._in_flight[executor] = batch
                    self._execute(batch)
                    del self._in_flight[executor]
            finally:
                with self._condition:
                    self._running -= 1

    def _take_batch(self) -> list[Entry[Result]]:
        """Remove and return the next sub-batch (caller holds the lock); items expired on the way are failed.

        Rows are capped at an equal share of the queue per idle executor, so one request of
        many items keeps every core busy instead of becoming one long single-threaded run.
        """
        idle = len(self._threads) - self._running  # this executor included
        max_rows = min(self.max_batch_size, math.ceil(len(self._queue) / idle))
        now = self.clock()
        return self._queue.take(
            functools.partial(self._still_wanted, now), self.max_batch_tokens, self.max_padding_ratio, max_rows
        )

    def _still_wanted(self, now: float, entry: Entry[Result]) -> bool:
        """False for an item to forget (cancelled) or to fail (expired); neither is ever scored.

        An item counts as expired once its deadline is nearer than the time a run of it alone takes at
        the measured rate: started, it would only finish late, on a core another item needs.
        """
        if entry.future.cancelled():
            self._release([entry], "cancelled")
        elif entry.deadline <= now + self._run_seconds(entry.tokens):
            if self._fail(entry, DeadlineExceeded("deadline passed while the item was queued")):
                self._release([entry], "deadline_exceeded")
            else:  # cancelled by its request thread since the check above
                self._release([entry], "cancelled")
        else:
            return True
        return False

    def _run_seconds(self, tokens: int) -> float:
        """The shortest time one run of `tokens` takes at the measured rate (0 before any measurement)."""
        return tokens / self._tokens_per_second if self._tokens_per_second > 0 else 0.0

    @staticmethod
    def _fail(entry: Entry[Result], error: Exception) -> bool:
        """Fail a future unless it was cancelled (or resolved) first; True if the error was set."""
        future = entry.future
        if future.done():
            return False
        # Claim it: a PENDING future becomes RUNNING (no longer cancellable), a cancelled one says so.
        if not future.running() and not future.set_running_or_notify_cancel():
            return False
        future.set_exception(error)  # only this thread resolves a RUNNING future
        return True

    def _execute(self, batch: list[Entry[Result]]) -> None:
        # From here on a future can no longer be cancelled; one cancelled just now is dropped.
        cancelled = [entry for entry in batch if not entry.future.set_running_or_notify_cancel()]
        if cancelled:
            self._release(cancelled, "cancelled")
            batch = [entry for entry in batch if entry not in cancelled]
        if not batch:
            return
        now = self.clock()
        for entry in batch:
            self._queue_wait.observe(now - entry.enqueued)
        try:
            items = self._score(batch)
        except Exception:
            if len(batch) == 1:
                log.exception("inference failed for one item of %d tokens", batch[0].tokens)
                self._fail(batch[0], InferenceFailed("the model failed on this item"))
                self._release(batch, "inference_failed")
                return
            # Isolate the bad item: every other item still gets its score.
            log.warning("inference failed for a batch of %d; scoring its items one by one", len(batch))
            for entry in batch:
                self._execute_alone(entry)
            return
        resolved = sum(self._resolve(entry, item) for entry, item in zip(batch, items, strict=True))
        self._items_scored.inc(resolved)
        self._release(batch, None)

    def _execute_alone(self, entry: Entry[Result]) -> None:
        try:
            (item,) = self._score([entry])
        except Exception:
            log.exception("inference failed for one item of %d tokens", entry.tokens)
            self._fail(entry, InferenceFailed("the model failed on this item"))
            self._release([entry], "inference_failed")
            return
        self._items_scored.inc(self._resolve(entry, item))
        self._release([entry], None)

    def _score(self, batch: list[Entry[Result]]) -> Sequence[Result | FailedRow]:
        input_ids, attention_mask = pad_batch([entry.input_ids for entry in batch], self.pad_id)
        real_tokens = sum(entry.tokens for entry in batch)
        started = time.perf_counter()
        rows = self.score_fn(input_ids, attention_mask)  # [batch, seq] -> [batch]
        seconds = time.perf_counter() - started
        if len(rows) != len(batch):
            raise ValueError(f"score_fn returned {len(rows)} results for {len(batch)} items")
        self._tokens_per_second = 0.8 * self._tokens_per_second + 0.2 * real_tokens / max(seconds, 1e-6)
        self._inference_seconds.observe(seconds)
        self._batch_size.observe(len(batch))
        self._batch_padded_tokens.observe(input_ids.size)
        self._padding_efficiency.observe(real_tokens / input_ids.size)
        self._tokens_scored.inc(real_tokens)
        return rows

    def _resolve(self, entry: Entry[Result], row: Result | FailedRow) -> bool:
        """Resolve a claimed future with its row's result, or fail it when the row has none; True if scored."""
        if isinstance(row, FailedRow):
            self._fail(entry, InferenceFailed(row.message))
            metrics.ITEMS_FAILED.labels(self.model, row.reason).inc()
            return False
        entry.future.set_result(row)
        return True

    def _release(self, entries: list[Entry[Result]], failure: str | None) -> None:
        """Take entries' tokens off the queue's count, once per entry however often it is called."""
        with self._condition:
            entries = [entry for entry in entries if not entry.released]
            for entry in entries:
                entry.released = True
            tokens = sum(entry.tokens for entry in entries)
            self._queued_tokens -= tokens
        self._queue_items.dec(len(entries))
        self._queue_tokens.dec(tokens)
        if failure is not None:
            metrics.ITEMS_FAILED.labels(self.model, failure).inc(len(entries))
