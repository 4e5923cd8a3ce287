"""The label store: add tasks, lease one to a labeller, record their ordering or skip, read what is finished.

Every change is one transaction that holds what it reads: SQLite's `BEGIN IMMEDIATE` takes the write
lock first; PostgreSQL locks the rows it picks (`FOR UPDATE`, and `SKIP LOCKED` for the next task, so
workers leasing at once each take a different one). A task is never lost (its lease expires and it is
leasable again) and never handed to two labellers at once.
"""

from __future__ import annotations

import random
import secrets
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from rmserve.errors import InvalidField, LeaseLost
from rmserve.labels.database import connect
from rmserve.labels.interchange import StoredTask
from rmserve.labels.migrations import migrate
from rmserve.labels.schema import orderings, tasks
from rmserve.labels.tasks import MAX_RESPONSES, Counts, Lease, NewTask, Ordering

Result = TypeVar("Result")
INSERT_RETRIES = 3  # PostgreSQL: two workers inserting the same key at once; the loser reads the winner's row


class LabelStore:
    """Tasks and orderings in one database; safe to share between threads, processes and hosts."""

    def __init__(self, url: str, lease_s: float, clock: Callable[[], float] = time.time):
        self.engine = connect(url)
        self.lease_s = lease_s
        self.clock = clock
        migrate(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def add(self, new_tasks: Iterable[NewTask]) -> int:
        """Add tasks not already in the store (by key); returns how many were new."""
        batch = {task.key: task for task in new_tasks}

        def insert(connection: sa.Connection) -> int:
            held = set(connection.scalars(sa.select(tasks.c.key).where(tasks.c.key.in_(batch))))
            fresh = [self.new_row(task) for key, task in batch.items() if key not in held]
            if fresh:
                connection.execute(tasks.insert(), fresh)
            return len(fresh)

        return self.transaction(insert) if batch else 0

    def offer(self, task: NewTask) -> None:
        """A review group: new, or merged into its task while nobody has seen it (workers see different responses)."""

        def merge(connection: sa.Connection) -> None:
            row = connection.execute(
                sa.select(tasks.c.id, tasks.c.responses, tasks.c.priority, tasks.c.lease_token)
                .where(tasks.c.key == task.key)
                .with_for_update()
            ).first()
            if row is None:
                connection.execute(tasks.insert().values(self.new_row(task)))
                return
            seen = row.lease_token is not None or connection.scalar(
                sa.select(sa.func.count()).where(orderings.c.task_id == row.id)
            )
            responses = list(row.responses)
            added = [response for response in task.responses if response not in responses]
            if seen or not added:
                return
            merged = (responses + added)[:MAX_RESPONSES]
            connection.execute(
                tasks.update()
                .where(tasks.c.id == row.id)
                .values(responses=merged, priority=max(row.priority, task.priority))
            )

        self.transaction(merge)

    def lease(self, labeller: str) -> Lease | None:
        """The task this labeller holds, or the next one they have not answered, leased to them; None when done."""
        with self.engine.begin() as connection:
            now = self.clock()
            held = connection.execute(
                sa.select(tasks).where(tasks.c.lease_labeller == labeller, tasks.c.lease_expires > now).limit(1)
            ).first()
            if held is not None:
                return _lease(dict(held._mapping))
            answered = sa.select(orderings.c.id).where(
                orderings.c.task_id == tasks.c.id, orderings.c.labeller == labeller
            )
            free = connection.execute(
                sa.select(tasks)
                .where(tasks.c.done < tasks.c.wanted, _not_leased(now), ~answered.exists())
                .order_by(tasks.c.priority.desc(), tasks.c.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            ).first()
            if free is None:
                return None
            shown = list(range(len(free.responses)))
            random.shuffle(shown)  # each labeller sees the responses in an order of their own
            lease = {
                "lease_labeller": labeller,
                "lease_token": secrets.token_hex(16),
                "lease_shown": shown,
                "lease_expires": now + self.lease_s,
            }
            connection.execute(tasks.update().where(tasks.c.id == free.id).values(lease))
            return _lease({**free._mapping, **lease})

    def submit(self, task_id: int, token: str, labeller: str, order: list[int] | None) -> None:
        """Record the holder's ordering (positions as shown, best first) or, with None, their skip."""
        with self.engine.begin() as connection:
            row = connection.execute(sa.select(tasks).where(tasks.c.id == task_id).with_for_update()).first()
            if row is None or row.lease_token != token or row.lease_labeller != labeller:
                raise LeaseLost(
                    "this task is no longer leased to you (the lease expired and another labeller took it); "
                    "load the next task"
                )
            ranking = None if order is None else [row.lease_shown[position] for position in _checked(order, row)]
            connection.execute(
                orderings.insert().values(
                    task_id=task_id, labeller=labeller, ranking=ranking, shown=row.lease_shown, created=self.clock()
                )
            )
            connection.execute(
                tasks.update()
                .where(tasks.c.id == task_id)
                .values(
                    done=row.done + (order is not None),
                    lease_labeller=None,
                    lease_token=None,
                    lease_shown=None,
                    lease_expires=None,
                )
            )

    def remaining(self, labeller: str) -> int:
        """Tasks that still want orderings and this labeller has not answered."""
        answered = sa.select(orderings.c.id).where(orderings.c.task_id == tasks.c.id, orderings.c.labeller == labeller)
        query = sa.select(sa.func.count()).where(tasks.c.done < tasks.c.wanted, ~answered.exists())
        with self.engine.connect() as connection:
            return int(connection.scalar(query) or 0)

    def counts(self) -> Counts:
        now = self.clock()
        open_tasks = tasks.c.done < tasks.c.wanted
        with self.engine.connect() as connection:
            queued = connection.scalar(sa.select(sa.func.count()).where(open_tasks, _not_leased(now)))
            leased = connection.scalar(sa.select(sa.func.count()).where(open_tasks, ~_not_leased(now)))
            done = connection.scalar(sa.select(sa.func.count()).where(~open_tasks))
            answers = connection.scalar(sa.select(sa.func.count()).select_from(orderings)) or 0
            ordered = connection.scalar(sa.select(sa.func.count()).where(orderings.c.ranking.is_not(sa.null()))) or 0
        return Counts(int(queued or 0), int(leased or 0), int(done or 0), ordered, answers - ordered)

    def orderings(self) -> Iterator[Ordering]:
        """Every answer, skips included, task by task in the order they were added."""
        with self.engine.connect() as connection:
            yield from _orderings(connection)

    def stored_tasks(self) -> list[StoredTask]:
        """Every task with its answers, in the order they were added (for export to other tools)."""
        answers: defaultdict[int, list[Ordering]] = defaultdict(list)
        with self.engine.connect() as connection:
            for ordering in _orderings(connection):
                answers[ordering.task_id].append(ordering)
            rows = connection.execute(sa.select(tasks).order_by(tasks.c.id)).all()
        return [
            StoredTask(row.key, row.prompt, tuple(row.responses), row.wanted, tuple(answers[row.id])) for row in rows
        ]

    def new_row(self, task: NewTask) -> dict[str, Any]:
        """The `label_tasks` row of a task not yet in the store."""
        return {
            "key": task.key,
            "source": task.source,
            "prompt": task.prompt,
            "responses": list(task.responses),
            "wanted": task.wanted,
            "done": 0,
            "priority": task.priority,
            "created": self.clock(),
        }

    def transaction(self, change: Callable[[sa.Connection], Result]) -> Result:
        """`change` in one transaction, run again when another worker inserted the same task key first."""
        for attempt in range(INSERT_RETRIES):
            try:
                with self.engine.begin() as connection:
                    return change(connection)
            except IntegrityError:
                if attempt == INSERT_RETRIES - 1:
                    raise
        raise AssertionError("not reached")


def _orderings(connection: sa.Connection) -> Iterator[Ordering]:
    query = (
        sa.select(orderings, tasks.c.prompt, tasks.c.responses)
        .join(tasks, tasks.c.id == orderings.c.task_id)
        .order_by(orderings.c.task_id, orderings.c.id)
    )
    for row in connection.execute(query):
        yield Ordering(
            task_id=row.task_id,
            labeller=row.labeller,
            prompt=row.prompt,
            responses=tuple(row.responses),
            ranking=None if row.ranking is None else tuple(row.ranking),
            shown=tuple(row.shown),
        )


def _not_leased(now: float) -> sa.ColumnElement[bool]:
    return sa.or_(tasks.c.lease_expires.is_(None), tasks.c.lease_expires <= now)


def _lease(row: Mapping[str, Any]) -> Lease:
    shown = tuple(row["lease_shown"])
    return Lease(
        task_id=row["id"],
        token=row["lease_token"],
        labeller=row["lease_labeller"],
        prompt=row["prompt"],
        shown=shown,
        responses=tuple(row["responses"][index] for index in shown),
        expires=row["lease_expires"],
    )


def _checked(order: list[int], row: sa.Row[Any]) -> list[int]:
    """`order` if it puts every shown position once, best first; else InvalidField naming `order`."""
    if sorted(order) != list(range(len(row.lease_shown))):
        raise InvalidField(
            "order", f"must list each of the positions 0-{len(row.lease_shown) - 1} once, best first, got {order}"
        )
    return order
