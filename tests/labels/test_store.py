"""The label store on SQLite and PostgreSQL: leases, expiry, N orderings, skips, review groups, migrations."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier

import pytest
import sqlalchemy as sa

from rmserve.errors import InvalidField, LeaseLost
from rmserve.labels.migrations import LATEST
from rmserve.labels.schema import schema_version
from rmserve.labels.store import LabelStore
from rmserve.labels.tasks import NewTask

MakeStore = Callable[..., LabelStore]


class Clock:
    """A settable clock: leases expire when a test says so."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_adding_the_same_task_twice_adds_it_once(make_store: MakeStore) -> None:
    store = make_store()
    assert store.add([NewTask("p", ("a", "b")), NewTask("q", ("a", "b"))]) == 2
    assert store.add([NewTask("p", ("a", "b")), NewTask("p", ("b", "a"))]) == 1  # other responses: another task
    assert store.counts().queued == 3


def test_a_task_is_leased_to_one_labeller_at_a_time(make_store: MakeStore) -> None:
    store = make_store()
    store.add([NewTask("p", ("a", "b"), wanted=2)])
    first = store.lease("ana")
    assert first is not None
    assert store.lease("bob") is None  # it wants two orderings, but ana holds it
    assert store.lease("ana") == first  # reloading the page gives ana the same task and shown order
    assert (store.counts().queued, store.counts().leased) == (0, 1)


def test_an_expired_lease_returns_the_task_to_the_queue(make_store: MakeStore) -> None:
    clock = Clock()
    store = make_store(lease_s=60.0, clock=clock)
    store.add([NewTask("p", ("a", "b", "c"))])
    ana = store.lease("ana")
    assert ana is not None
    clock.now += 61
    assert store.counts().queued == 1
    bob = store.lease("bob")
    assert bob is not None and bob.task_id == ana.task_id
    with pytest.raises(LeaseLost):  # ana comes back too late: bob holds it now
        store.submit(ana.task_id, ana.token, "ana", [0, 1, 2])
    store.submit(bob.task_id, bob.token, "bob", [0, 1, 2])
    assert store.counts().done == 1


def test_an_expired_lease_nobody_took_still_saves(make_store: MakeStore) -> None:
    clock = Clock()
    store = make_store(lease_s=60.0, clock=clock)
    store.add([NewTask("p", ("a", "b"))])
    lease = store.lease("ana")
    assert lease is not None
    clock.now += 600
    store.submit(lease.task_id, lease.token, "ana", [1, 0])
    assert [ordering.labeller for ordering in store.orderings()] == ["ana"]


def test_the_ordering_is_recorded_in_the_tasks_own_order_with_the_order_shown(make_store: MakeStore) -> None:
    store = make_store()
    store.add([NewTask("p", ("a", "b", "c", "d"))])
    lease = store.lease("ana")
    assert lease is not None
    assert sorted(lease.responses) == ["a", "b", "c", "d"]
    store.submit(lease.task_id, lease.token, "ana", [3, 2, 1, 0])  # the last shown is best
    (ordering,) = store.orderings()
    assert ordering.shown == lease.shown
    assert ordering.ranked_responses() == list(reversed(lease.responses))


def test_each_of_n_orderings_comes_from_a_different_labeller(make_store: MakeStore) -> None:
    store = make_store()
    store.add([NewTask("p", ("a", "b"), wanted=2)])
    for labeller in ("ana", "bob"):
        lease = store.lease(labeller)
        assert lease is not None
        store.submit(lease.task_id, lease.token, labeller, [0, 1])
        assert store.lease(labeller) is None  # never the same task twice
    assert store.lease("cid") is None  # two orderings were wanted, two were given
    assert store.counts().done == 1
    assert sorted(ordering.labeller for ordering in store.orderings()) == ["ana", "bob"]


def test_a_skip_passes_the_task_to_someone_else(make_store: MakeStore) -> None:
    store = make_store()
    store.add([NewTask("p", ("a", "b"))])
    lease = store.lease("ana")
    assert lease is not None
    store.submit(lease.task_id, lease.token, "ana", None)
    assert store.lease("ana") is None
    assert store.remaining("ana") == 0
    assert store.remaining("bob") == 1
    counts = store.counts()
    assert (counts.queued, counts.done, counts.orderings, counts.skips) == (1, 0, 0, 1)


def test_an_order_that_is_not_a_permutation_names_the_field(make_store: MakeStore) -> None:
    store = make_store()
    store.add([NewTask("p", ("a", "b", "c"))])
    lease = store.lease("ana")
    assert lease is not None
    with pytest.raises(InvalidField) as raised:
        store.submit(lease.task_id, lease.token, "ana", [0, 0, 1])
    assert raised.value.field == "order"
    assert store.lease("ana") == lease  # still leased: the labeller can fix it


def test_review_groups_merge_until_someone_sees_them(make_store: MakeStore) -> None:
    store = make_store()
    store.offer(NewTask("p", ("a", "b"), source="review:m", priority=0.1))
    store.offer(NewTask("p", ("b", "c"), source="review:m", priority=0.5))  # another worker's responses
    store.add([NewTask("q", ("x", "y"))])
    lease = store.lease("ana")
    assert lease is not None
    assert sorted(lease.responses) == ["a", "b", "c"]  # merged, and first: the most disagreed-on
    store.offer(NewTask("p", ("d", "e"), source="review:m"))
    assert sorted(store.lease("ana").responses) == ["a", "b", "c"]  # type: ignore[union-attr]


def test_reopening_keeps_the_tasks_and_the_schema_version(make_store: MakeStore) -> None:
    store = make_store()
    store.add([NewTask("p", ("a", "b"))])
    reopened = make_store()
    assert reopened.counts().queued == 1
    with reopened.engine.connect() as connection:
        assert connection.scalar(sa.select(schema_version.c.version)) == LATEST


def test_a_newer_schema_is_refused(make_store: MakeStore) -> None:
    store = make_store()
    with store.engine.begin() as connection:
        connection.execute(schema_version.update().values(version=LATEST + 1))
    with pytest.raises(RuntimeError, match="newer than this rmserve"):
        make_store()


def _lease_until_empty(url: str, worker: str, start: Barrier, found: Queue[list[int] | str]) -> None:
    """A worker process: lease tasks as new labellers until none is left; reports the tasks leased, or its error."""
    store = LabelStore(url, lease_s=600.0)
    start.wait()  # both processes begin together
    leased = []
    try:
        while (lease := store.lease(f"{worker}-{len(leased)}")) is not None:
            leased.append(lease.task_id)
            store.remaining(lease.labeller)  # as the page does
    except Exception as error:  # the parent's assertion shows it (e.g. "database is locked" in a deferred transaction)
        found.put(repr(error))
    else:
        found.put(leased)
    finally:
        store.close()


def test_two_processes_leasing_at_once_never_share_or_lose_a_task(make_store: MakeStore, store_url: str) -> None:
    tasks = 200
    make_store().add([NewTask(f"prompt {number}", ("a", "b")) for number in range(tasks)])
    context = multiprocessing.get_context("spawn")
    start, found = context.Barrier(2), context.Queue()
    workers = [context.Process(target=_lease_until_empty, args=(store_url, name, start, found)) for name in "ab"]
    for worker in workers:
        worker.start()
    reports = [found.get(timeout=120), found.get(timeout=120)]
    for worker in workers:
        worker.join(timeout=30)
    errors = [report for report in reports if isinstance(report, str)]
    assert not errors, f"a worker failed: {errors}"
    together = [task for report in reports for task in report]
    assert sorted(together) == sorted(set(together)), "a task was leased twice"
    assert len(together) == tasks, "a task was never leased"
