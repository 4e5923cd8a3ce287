"""The batcher, driven by a fake score_fn that records every batch it is given (its results: the rows' id sums)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from rmserve import metrics
from rmserve.engine.batcher import Batcher, Entry, FailedRow
from rmserve.engine.served_model import wait_all
from rmserve.errors import DeadlineExceeded, InferenceFailed, NotReady, PayloadTooLarge, QueueFull
from tests.reliability_report import record

PAD = 0
POISON = 666  # a token id the fake model chokes on


class FakeModel:
    """score = sum of token ids; records batches; can be held at a gate to let a queue build up."""

    def __init__(self) -> None:
        self.batches: list[np.ndarray] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> list[float]:
        self.entered.set()
        assert self.gate.wait(10), "test forgot to open the gate"
        self.batches.append(input_ids.copy())
        if (input_ids == POISON).any():
            raise RuntimeError("poisoned batch")
        return (input_ids * attention_mask).sum(axis=1).astype(np.float64).tolist()


@pytest.fixture
def model() -> FakeModel:
    return FakeModel()


@pytest.fixture
def make_batcher(model: FakeModel) -> Iterator:
    batchers: list[Batcher] = []

    def build(**overrides: object) -> Batcher:
        options = {"max_batch_tokens": 64, "max_queue_tokens": 1000, "max_padding_ratio": 1.5}
        options.update(overrides)
        batcher = Batcher("fake", model, PAD, **options).start()  # type: ignore[arg-type]
        batchers.append(batcher)
        return batcher

    yield build
    model.gate.set()
    for batcher in batchers:
        batcher.stop(timeout=5)


def later(seconds: float = 10.0) -> float:
    return time.monotonic() + seconds


def hold(model: FakeModel, batcher: Batcher) -> None:
    """Occupy the batcher thread with one item so that what follows queues up behind it."""
    model.gate.clear()
    model.entered.clear()
    batcher.submit([[1]], batcher.clock() + 100)
    assert model.entered.wait(5)


def test_results_come_back_in_request_order(make_batcher, model: FakeModel) -> None:
    batcher = make_batcher()
    sequences = [[5] * 7, [1, 2], [3] * 12, [4]]
    assert wait_all(batcher.submit(sequences, later()), later()) == [35, 3, 36, 4]


def test_any_result_type_comes_back_with_its_item_in_request_order(model: FakeModel) -> None:
    """The batcher never looks inside a row's result: a pair per row crosses sub-batches intact."""

    def with_lengths(input_ids: np.ndarray, attention_mask: np.ndarray) -> list[tuple[float, int]]:
        return list(zip(model(input_ids, attention_mask), attention_mask.sum(axis=1).tolist(), strict=True))

    batcher = Batcher("fake", with_lengths, PAD, max_batch_tokens=16, max_queue_tokens=1000, max_padding_ratio=1.5)
    try:
        batcher.start()
        results = wait_all(batcher.submit([[5] * 7, [1, 2], [3] * 12, [4]], later()), later())
    finally:
        batcher.stop(timeout=5)
    assert results == [(35, 7), (3, 2), (36, 12), (4, 1)]
    assert len(model.batches) > 1


def test_a_score_fn_with_a_result_short_fails_the_items(model: FakeModel) -> None:
    def one_short(input_ids: np.ndarray, attention_mask: np.ndarray) -> list[float]:
        return model(input_ids, attention_mask)[:-1]

    batcher = Batcher("fake", one_short, PAD, max_batch_tokens=64, max_queue_tokens=1000, max_padding_ratio=1.5)
    try:
        batcher.start()
        with pytest.raises(InferenceFailed):
            wait_all(batcher.submit([[1, 2]], later()), later())
    finally:
        batcher.stop(timeout=5)


def test_queued_items_are_batched_by_similar_length_under_the_budget(make_batcher, model: FakeModel) -> None:
    batcher = make_batcher(max_batch_tokens=32, max_padding_ratio=1.5)
    hold(model, batcher)
    sequences = [[1] * 8, [1] * 30, [1] * 7, [1] * 8, [1] * 29, [1] * 6]
    futures = batcher.submit(sequences, later())
    model.gate.set()
    assert wait_all(futures, later()) == [8, 30, 7, 8, 29, 6]
    queued = model.batches[1:]
    for batch in queued:
        real = (batch != PAD).sum()
        assert batch.size <= 32 or len(batch) == 1
        assert batch.size <= 1.5 * real
    assert sorted(len(batch) for batch in queued) == [1, 1, 4]  # the four short ones ride together


def test_equal_items_fill_batches_up_to_the_row_limit(make_batcher, model: FakeModel) -> None:
    batcher = make_batcher(max_batch_tokens=1000, max_batch_size=4)
    hold(model, batcher)
    futures = batcher.submit([[1, 1]] * 10, later())
    model.gate.set()
    assert wait_all(futures, later()) == [2] * 10
    assert [len(batch) for batch in model.batches[1:]] == [4, 4, 2]


def test_an_item_over_the_budget_is_scored_alone(make_batcher, model: FakeModel) -> None:
    batcher = make_batcher(max_batch_tokens=16)
    assert wait_all(batcher.submit([[2] * 40], later()), later()) == [80]
    assert model.batches[-1].shape == (1, 40)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_expired_items_are_never_scored(make_batcher, model: FakeModel) -> None:
    clock = FakeClock()
    batcher = make_batcher(clock=clock)
    hold(model, batcher)
    expired = batcher.submit([[7, 7, 7]], clock.now + 1)
    alive = batcher.submit([[9]], clock.now + 10)
    clock.now += 5  # the first deadline passes while the batcher is busy
    model.gate.set()
    with pytest.raises(DeadlineExceeded):
        expired[0].result(timeout=5)
    assert alive[0].result(timeout=5) == 9
    assert not any((batch == 7).any() for batch in model.batches)


def test_an_item_that_can_only_finish_late_is_never_started(make_batcher, model: FakeModel) -> None:
    clock = FakeClock()
    batcher = make_batcher(clock=clock, tokens_per_second=100.0)  # a 10-token item needs 0.1 s
    hopeless = batcher.submit([[7] * 10], clock.now + 0.05)
    in_time = batcher.submit([[9] * 10], clock.now + 1.0)
    with pytest.raises(DeadlineExceeded):
        hopeless[0].result(timeout=5)
    assert in_time[0].result(timeout=5) == 90  # the fake model scores the sum of the ids
    assert not any((batch == 7).any() for batch in model.batches)


def test_cancelled_items_are_never_scored(make_batcher, model: FakeModel) -> None:
    batcher = make_batcher()
    hold(model, batcher)
    (cancelled,) = batcher.submit([[7, 7]], later())
    assert cancelled.cancel()
    (alive,) = batcher.submit([[9]], later())
    model.gate.set()
    assert alive.result(timeout=5) == 9
    assert not any((batch == 7).any() for batch in model.batches)
    assert batcher.queued_tokens == 0


def test_full_queue_refuses_the_whole_request_with_retry_after(make_batcher, model: FakeModel) -> None:
    batcher = make_batcher(max_queue_tokens=10, max_batch_tokens=10)
    hold(model, batcher)  # 1 token in flight
    batcher.submit([[1] * 6], later())
    with pytest.raises(QueueFull) as refused:
        batcher.submit([[1] * 2, [1] * 2], later())
    assert int(refused.value.headers["Retry-After"]) >= 1
    assert batcher.queued_tokens == 7  # nothing of the refused request was queued
    model.gate.set()


def test_a_request_larger_than_the_whole_queue_is_413_not_429(make_batcher) -> None:
    batcher = make_batcher(max_queue_tokens=10, max_batch_tokens=10)
    with pytest.raises(PayloadTooLarge):
        batcher.submit([[1] * 11], later())


def test_a_failing_item_fails_alone_and_its_batch_mates_are_scored(make_batcher, model: FakeModel) -> None:
    batcher = make_batcher()
    hold(model, batcher)
    good = batcher.submit([[1, 1, 1], [2, 2, 2]], later())
    bad = batcher.submit([[POISON, 1, 1]], later())
    model.gate.set()
    assert wait_all(good, later()) == [3, 6]
    with pytest.raises(InferenceFailed):
        bad[0].result(timeout=5)
    assert batcher.queued_tokens == 0


def test_a_failed_row_fails_that_item_alone_and_is_counted_by_its_reason() -> None:
    def nan_for_long(input_ids: np.ndarray, attention_mask: np.ndarray) -> list[float | FailedRow]:
        lengths = attention_mask.sum(axis=1).tolist()
        return [FailedRow("the model returned a non-finite score", "non_finite") if n > 2 else 1.0 for n in lengths]

    failed = metrics.ITEMS_FAILED.labels("nan", "non_finite")
    before = failed._value.get()
    batcher: Batcher[float] = Batcher("nan", nan_for_long, PAD, 64, 1000, 1.5).start()
    futures = batcher.submit([[1], [1, 1, 1]], later())
    assert futures[0].result(timeout=5) == 1.0
    with pytest.raises(InferenceFailed, match="non-finite"):
        futures[1].result(timeout=5)
    batcher.stop(timeout=5)
    assert failed._value.get() == before + 1 and batcher.queued_tokens == 0


def test_stop_finishes_accepted_work_then_refuses_new(make_batcher, model: FakeModel) -> None:
    batcher = make_batcher()
    hold(model, batcher)
    accepted = batcher.submit([[4, 4]], later())
    stopper = threading.Thread(target=batcher.stop, kwargs={"timeout": 5})
    stopper.start()
    model.gate.set()
    stopper.join(5)
    assert accepted[0].result(timeout=0) == 8
    with pytest.raises(NotReady):
        batcher.submit([[1]], later())


def test_wait_all_cancels_leftovers_at_the_deadline(make_batcher, model: FakeModel) -> None:
    batcher = make_batcher()
    hold(model, batcher)
    futures = batcher.submit([[3, 3]], later())
    with pytest.raises(DeadlineExceeded):
        wait_all(futures, time.monotonic() + 0.01)
    assert futures[0].cancelled()
    model.gate.set()


def test_an_item_cancelled_while_its_batch_is_being_cut_frees_its_tokens(model: FakeModel) -> None:
    batcher = Batcher("fake", model, PAD, 64, 1000, 1.5)  # not started: drive one batch by hand
    (cancelled,) = batcher.submit([[7, 7]], later())
    (kept,) = batcher.submit([[5]], later())
    with batcher._condition:
        batch = batcher._take_batch()
    cancelled.cancel()
    batcher._execute(batch)  # the cut saw both; one was cancelled since
    assert kept.result(timeout=0) == 5
    assert batcher.queued_tokens == 0
    assert not any((batch == 7).any() for batch in model.batches)


def tokens_read_per_item(queued: int, monkeypatch: pytest.MonkeyPatch) -> float:
    """How often the batcher reads an item's length, per item, scoring `queued` items of mixed lengths at once."""
    reads = 0
    length = Entry.tokens.fget

    def counted(entry: Entry) -> int:
        nonlocal reads
        reads += 1
        return length(entry)  # type: ignore[misc]

    monkeypatch.setattr(Entry, "tokens", property(counted))
    model = FakeModel()
    batcher = Batcher("fake", model, PAD, 64, 10**6, 1.5, max_batch_size=8).start()
    hold(model, batcher)
    requests = [
        batcher.submit([[1] * (1 + (item * 7 + request) % 32) for item in range(64)], later(60))
        for request in range(queued // 64)
    ]
    model.gate.set()
    for futures in requests:
        wait_all(futures, later(60))
    batcher.stop(timeout=5)
    return reads / queued


def test_taking_a_sub_batch_costs_the_same_however_long_the_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sorting the whole queue for every sub-batch made a backlog of 30 x 512 items cost a third of the throughput."""
    short, long = tokens_read_per_item(128, monkeypatch), tokens_read_per_item(4096, monkeypatch)
    assert long <= 1.1 * short, (short, long)
    record(
        "Engine: a long queue",
        "4,096 items of 1-32 tokens queued at once behind a busy executor (sub-batches of at most 8), against 128",
        f"the batcher reads an item's length {long:.1f} times per item for 4,096 queued, {short:.1f} for 128: "
        "taking a sub-batch does not grow with the queue",
    )


# --- the batcher survives its own bugs -----------------------------------------------------------


def test_a_cancel_racing_the_deadline_never_kills_the_thread(make_batcher, model: FakeModel) -> None:
    """The request thread cancels at its deadline while the batcher fails the same item for it."""
    clock = FakeClock()
    batcher = make_batcher(clock=clock)
    hold(model, batcher)
    (racing,) = batcher.submit([[7, 7]], clock.now + 1)
    check_cancelled = racing.cancelled

    def cancelled_then_cancel() -> bool:  # the batcher saw "not cancelled"; the request cancels right after
        seen = check_cancelled()
        racing.cancel()
        return seen

    racing.cancelled = cancelled_then_cancel  # type: ignore[method-assign]
    clock.now += 5
    model.gate.set()
    # The batcher reads the fake clock, the waiting thread the real one.
    assert wait_all(batcher.submit([[9]], clock.now + 10), later(10)) == [9]  # still scoring
    assert batcher.healthy and batcher.restarts == 0
    assert not any((batch == 7).any() for batch in model.batches)
    assert batcher.queued_tokens == 0
    record(
        "Engine: a cancel racing the deadline",
        "the request thread cancels its item between the batcher's cancelled() check and its failing the "
        "item at the deadline (forced)",
        "thread alive, 0 restarts needed, the item never scored, queued tokens back to 0, the next request scored",
    )


class FlakyClock:
    """A clock that raises once when armed: a bug inside the batcher's own loop."""

    def __init__(self) -> None:
        self.armed = False

    def __call__(self) -> float:
        if self.armed:
            self.armed = False
            raise RuntimeError("bug in the batcher loop")
        return time.monotonic()


def test_a_crash_of_the_loop_is_logged_counted_and_the_batcher_restarts(
    make_batcher, model: FakeModel, caplog: pytest.LogCaptureFixture
) -> None:
    from rmserve import metrics

    clock = FlakyClock()
    batcher = make_batcher(clock=clock)
    before = metrics.BATCHER_RESTARTS.labels("fake")._value.get()
    hold(model, batcher)
    futures = batcher.submit([[2, 2]], later())
    clock.armed = True  # the loop crashes on this item's turn, keeps it, and restarts
    model.gate.set()
    assert wait_all(futures, later()) == [4]
    assert wait_all(batcher.submit([[3]], later()), later()) == [3]
    assert batcher.restarts == 1 and batcher.healthy
    assert metrics.BATCHER_RESTARTS.labels("fake")._value.get() == before + 1
    assert "batcher of model fake crashed" in caplog.text
    assert batcher.queued_tokens == 0
    record(
        "Engine: the batcher loop itself crashes",
        "an exception raised inside the batcher's loop (forced), with an item waiting",
        "logged with its traceback, rmserve_batcher_restarts_total +1, /readyz 503 while it restarts, "
        "the waiting item scored after the restart, queued tokens back to 0",
    )


def test_a_crash_while_scoring_fails_that_batch_and_frees_its_tokens(make_batcher, model: FakeModel) -> None:
    batcher = make_batcher()
    original = batcher._resolve

    def broken_resolve(entry, raw: float) -> None:
        batcher._resolve = original  # type: ignore[method-assign]
        raise RuntimeError("bug while resolving")

    batcher._resolve = broken_resolve  # type: ignore[method-assign]
    (crashed,) = batcher.submit([[5]], later())
    with pytest.raises(InferenceFailed):
        crashed.result(timeout=5)
    assert wait_all(batcher.submit([[6]], later()), later()) == [6]
    assert batcher.queued_tokens == 0 and batcher.restarts == 1


def test_the_batcher_is_unhealthy_once_its_thread_has_ended(make_batcher) -> None:
    batcher = make_batcher()
    assert batcher.healthy
    batcher.stop(timeout=5)
    assert not batcher.healthy


def test_when_one_item_of_a_request_fails_its_other_items_are_cancelled() -> None:
    from concurrent.futures import Future

    failed, waiting = Future(), Future()
    failed.set_exception(InferenceFailed("the model failed on this item"))
    with pytest.raises(InferenceFailed):
        wait_all([failed, waiting], later())
    assert waiting.cancelled()


class BarrierModel:
    """Every call waits at a barrier of `parties`: it returns only if that many calls run at once."""

    def __init__(self, parties: int) -> None:
        self.barrier = threading.Barrier(parties, timeout=10)
        self.rows: list[int] = []
        self.threads: set[str] = set()
        self.lock = threading.Lock()

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> list[float]:
        with self.lock:
            self.rows.append(len(input_ids))
            self.threads.add(threading.current_thread().name)
        self.barrier.wait()  # BrokenBarrierError (a failed batch) unless `parties` runs are in flight together
        return (input_ids * attention_mask).sum(axis=1).astype(np.float64).tolist()


def test_executors_run_sub_batches_concurrently() -> None:
    fake = BarrierModel(parties=2)
    batcher = Batcher("fake", fake, PAD, 64, 1000, 1.5, executors=2).start()
    first = batcher.submit([[1] * 4], later())
    second = batcher.submit([[2] * 30], later())  # too long to share a sub-batch with the first
    assert wait_all(first + second, later()) == [4, 60]
    assert len(fake.threads) == 2
    batcher.stop(timeout=5)


def test_one_request_of_many_items_is_shared_between_executors() -> None:
    fake = BarrierModel(parties=3)
    batcher = Batcher("fake", fake, PAD, 10_000, 10_000, 1.5, executors=3)
    futures = batcher.submit([[1, 1]] * 30, later())  # queued before any executor runs
    batcher.start()
    assert wait_all(futures, later()) == [2] * 30
    assert sorted(fake.rows) == [10, 10, 10]
    batcher.stop(timeout=5)


def test_stop_waits_for_every_executor_to_finish_accepted_work(model: FakeModel) -> None:
    batcher = Batcher("fake", model, PAD, 8, 1000, 1.0, executors=3).start()
    model.gate.clear()
    accepted = batcher.submit([[1] * 8, [2] * 8, [3] * 8, [4] * 8], later())
    stopper = threading.Thread(target=batcher.stop, kwargs={"timeout": 5})
    stopper.start()
    model.gate.set()
    stopper.join(5)
    assert not stopper.is_alive()
    assert [future.result(timeout=0) for future in accepted] == [8, 16, 24, 32]
    assert batcher.queued_tokens == 0
