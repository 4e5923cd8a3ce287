"""Schema migrations: numbered steps, applied in order, the version kept in `schema_version`.

Hand-written rather than Alembic: the store has two tables and Alembic is not a dependency; each step
runs in the same transaction as the version bump, and the transaction is exclusive (SQLite
`BEGIN IMMEDIATE`, a PostgreSQL advisory lock), so workers starting together migrate once.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa

from rmserve.labels.schema import orderings, schema_version, tasks

MIGRATION_LOCK = 7_531_024  # PostgreSQL advisory-lock key of the label store's migrations


def _create_tables(connection: sa.Connection) -> None:
    tasks.create(connection)
    orderings.create(connection)


# (version it brings the schema to, what it does); append a step for each change, never edit one.
STEPS: tuple[tuple[int, Callable[[sa.Connection], None]], ...] = ((1, _create_tables),)
LATEST = STEPS[-1][0]


def current_version(connection: sa.Connection) -> int:
    """The schema version of the database, 0 when it is new."""
    if not sa.inspect(connection).has_table(schema_version.name):
        return 0
    return int(connection.scalar(sa.select(sa.func.max(schema_version.c.version))) or 0)


def migrate(engine: sa.Engine) -> int:
    """Bring the database to the latest schema; returns the version it was at."""
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(sa.select(sa.func.pg_advisory_xact_lock(MIGRATION_LOCK)))
        found = current_version(connection)
        if found > LATEST:
            raise RuntimeError(f"the label store is at schema version {found}, newer than this rmserve ({LATEST})")
        if found == 0:
            schema_version.create(connection)
            connection.execute(schema_version.insert().values(version=0))
        for version, step in STEPS:
            if version > found:
                step(connection)
                connection.execute(schema_version.update().values(version=version))
        return found
