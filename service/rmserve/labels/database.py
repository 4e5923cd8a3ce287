"""Which database the label store uses and how it connects: SQLite by default, PostgreSQL by URL.

SQLAlchemy Core is the one code path for both: well kept, it writes each dialect's SQL (`FOR UPDATE
SKIP LOCKED` on PostgreSQL, nothing on SQLite) and pools connections, and the store needs no ORM.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from rmserve.config import Settings

SQLITE_FILE = "labels.sqlite"
SQLITE_BUSY_TIMEOUT_S = 30.0  # a writer waits this long for another worker's transaction


def database_url(settings: Settings) -> str:
    """`RMSERVE_LABEL_DB`, or a SQLite file under `RMSERVE_DATA_DIR`."""
    if settings.label_db:
        return settings.label_db
    return f"sqlite:///{(settings.data_dir / SQLITE_FILE).resolve()}"


def connect(url: str) -> sa.Engine:
    """An engine whose transactions are exclusive where the store needs them to be (see `_sqlite_engine`)."""
    parsed = sa.make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")  # psycopg 3, not SQLAlchemy's default psycopg2
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed)
    return sa.create_engine(parsed, pool_pre_ping=True)


def _sqlite_engine(url: sa.URL) -> sa.Engine:
    """SQLite with every transaction `BEGIN IMMEDIATE`: it takes the write lock when it starts, so two workers
    never both read a task as free and then both lease it (a deferred transaction would upgrade too late)."""
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})

    @event.listens_for(engine, "connect")
    def _autocommit_driver(dbapi_connection: Any, _record: Any) -> None:
        # The driver's own implicit BEGIN would come first; SQLAlchemy's "begin" event issues ours instead.
        dbapi_connection.isolation_level = None
        dbapi_connection.execute("PRAGMA journal_mode=WAL")  # readers do not wait for the writer
        dbapi_connection.execute("PRAGMA foreign_keys=ON")

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: sa.Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine
