"""Label stores for the tests: a SQLite file, and a PostgreSQL database where a server can be started here."""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rmserve.labels.store import LabelStore

# Debian's `postgresql` package puts its server tools here, off PATH.
POSTGRES_BIN = [Path(found).parent for found in [shutil.which("pg_ctl")] if found] + sorted(
    Path("/usr/lib/postgresql").glob("*/bin"), reverse=True
)
PG_USER = "postgres"  # initdb refuses root; the Debian package creates this account


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _as_server_user(command: list[str]) -> list[str]:
    return ["runuser", "-u", PG_USER, "--", *command] if os.geteuid() == 0 else command


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A throwaway PostgreSQL server on a Unix socket; yields its URL without a database name."""
    binaries = next((path for path in POSTGRES_BIN if (path / "initdb").is_file()), None)
    if binaries is None:
        pytest.skip("no PostgreSQL server here (Debian's `postgresql` package provides it; .ci/install-tools.sh)")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: initdb cannot run as root")
    # Not under pytest's tmp directory: as root that is private to root, and the server runs as `postgres`.
    data = Path(tempfile.mkdtemp(prefix="rmserve-postgres-"))
    if os.geteuid() == 0:
        shutil.chown(data, PG_USER)
    port = _free_port()
    subprocess.run(
        _as_server_user([str(binaries / "initdb"), "-D", str(data / "db"), "-A", "trust", "-U", PG_USER]),
        check=True,
        capture_output=True,
    )
    options = f"-k {data} -p {port} -c listen_addresses='' -c fsync=off"
    # The server's output goes to a log file: a pipe it inherited would never close, and run() would wait on it.
    log = data / "server.log"
    subprocess.run(
        _as_server_user(
            [str(binaries / "pg_ctl"), "-D", str(data / "db"), "-l", str(log), "-o", options, "-w", "start"]
        ),
        check=True,
        stdout=subprocess.DEVNULL,
        timeout=60,
    )
    try:
        yield f"postgresql://{PG_USER}@/{{database}}?host={data}&port={port}"
    finally:
        subprocess.run(
            _as_server_user([str(binaries / "pg_ctl"), "-D", str(data / "db"), "-m", "immediate", "stop"]),
            check=False,
            capture_output=True,
        )
        shutil.rmtree(data, ignore_errors=True)


_databases = itertools.count()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new, empty label database: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'labels.sqlite'}"
    import psycopg
    from psycopg import sql

    server: str = request.getfixturevalue("postgres_server")
    name = f"labels_{os.getpid()}_{next(_databases)}"
    with psycopg.connect(server.format(database="postgres")) as admin:
        admin.autocommit = True
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return server.format(database=name)


@pytest.fixture
def make_store(store_url: str) -> Iterator[Callable[..., LabelStore]]:
    """Stores on the test's database (several share it, as workers do); disposed of after the test."""
    opened: list[LabelStore] = []

    def build(lease_s: float = 60.0, clock: Callable[[], float] | None = None) -> LabelStore:
        store = LabelStore(store_url, lease_s) if clock is None else LabelStore(store_url, lease_s, clock)
        opened.append(store)
        return store

    yield build
    for store in opened:
        store.close()
