"""Tasks and answers from another tool's file into the label store, each task in one transaction.

A task is found by the key its file names (a task rmserve exported) or by its prompt and responses, else added;
an answer joins it unless its labeller already answered it, so importing a file twice adds nothing twice.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import sqlalchemy as sa

from rmserve.labels.interchange import ImportedTask, ImportSummary
from rmserve.labels.schema import orderings, tasks
from rmserve.labels.store import LabelStore


def import_tasks(store: LabelStore, imported: Iterable[ImportedTask]) -> ImportSummary:
    """Add the tasks and answers the store lacks."""
    summary = ImportSummary()
    for item in imported:
        added, ordered, skipped, held = store.transaction(functools.partial(_import, store, item))
        summary.tasks += added
        summary.orderings += ordered
        summary.skips += skipped
        summary.held += held
        summary.tied += item.tied
    return summary


def _import(store: LabelStore, item: ImportedTask, connection: sa.Connection) -> tuple[int, int, int, int]:
    """(tasks added, orderings added, skips added, answers already held) for one task."""
    found = _find(connection, item)
    if found is None:
        task_id = connection.scalar(tasks.insert().values(store.new_row(item.task)).returning(tasks.c.id))
        responses, done, answered = list(item.task.responses), 0, set()
    else:
        task_id, responses, done = found
        answered = set(connection.scalars(sa.select(orderings.c.labeller).where(orderings.c.task_id == task_id)))
    to_store = [responses.index(text) for text in item.task.responses]  # the file's response index -> the store's
    fresh = []
    for answer in item.answers:
        if answer.labeller not in answered:
            answered.add(answer.labeller)
            fresh.append(answer)
    if fresh:
        connection.execute(
            orderings.insert(),
            [
                {
                    "task_id": task_id,
                    "labeller": answer.labeller,
                    "ranking": None if answer.ranking is None else [to_store[index] for index in answer.ranking],
                    "shown": [],  # the other tool did not say in which order it showed them
                    "created": store.clock(),
                }
                for answer in fresh
            ],
        )
    ordered = sum(answer.ranking is not None for answer in fresh)
    if ordered:
        connection.execute(tasks.update().where(tasks.c.id == task_id).values(done=done + ordered))
    return int(found is None), ordered, len(fresh) - ordered, len(item.answers) - len(fresh)


def _find(connection: sa.Connection, item: ImportedTask) -> tuple[int, list[str], int] | None:
    """The store's task this one is: by the key its file names (when the responses match), else by its own key."""
    for key in (item.key, item.task.key):
        if key is None:
            continue
        row = connection.execute(
            sa.select(tasks.c.id, tasks.c.responses, tasks.c.done).where(tasks.c.key == key).with_for_update()
        ).first()
        if row is not None and sorted(row.responses) == sorted(item.task.responses):
            return row.id, list(row.responses), row.done
    return None
