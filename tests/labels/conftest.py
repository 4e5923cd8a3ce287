"""Label stores for the tests: a SQLite file, and a PostgreSQL database where a server can be started here."""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rmserve.labels.store import LabelStore

# Debian's `postgresql` package puts its server tools here, off PATH.
POSTGRES_BIN = [Path(found).parent for found in [shutil.which("initdb")] if found] + sorted(
    Path("/usr/lib/postgresql").glob("*/bin"), reverse=True
)
# initdb refuses to run as root: as root (CI's containers), the server runs as an account of no privilege.
SERVER_ACCOUNTS = ("postgres", "nobody")  # Debian's package creates the first; every system has the second
START_TIMEOUT_S = 60


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _server_account() -> str | None:
    """Whom the server runs as: None for ourselves, else the first account of SERVER_ACCOUNTS that exists."""
    if os.geteuid() != 0:
        return None
    for name in SERVER_ACCOUNTS:
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    pytest.skip(f"running as root and none of the accounts {SERVER_ACCOUNTS} exists: initdb refuses root")


def _run(command: list[str], account: str | None) -> None:
    """Run a server tool (as `account`); skip the tests, with the tool's own words, if it fails."""
    try:
        subprocess.run(
            command,
            user=account,
            group=None if account is None else pwd.getpwnam(account).pw_gid,
            extra_groups=None if account is None else [],
            check=True,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT_S,
        )
    except (OSError, subprocess.SubprocessError) as error:
        said = error.stderr if isinstance(error, subprocess.CalledProcessError) and error.stderr else str(error)
        pytest.skip(f"could not start a PostgreSQL server ({Path(command[0]).name}): {said.strip()[-500:]}")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A throwaway PostgreSQL server on a Unix socket; yields its URL with `{database}` to fill in."""
    binaries = next((path for path in POSTGRES_BIN if (path / "initdb").is_file()), None)
    if binaries is None:
        pytest.skip("no PostgreSQL server here (Debian's `postgresql` package provides it; .ci/install-tools.sh)")
    account = _server_account()
    # Not under pytest's tmp directory: as root that is private to root, and the server may run as another account.
    data = Path(tempfile.mkdtemp(prefix="rmserve-postgres-"))
    if account is not None:
        shutil.chown(data, account)
    port = _free_port()
    user = pwd.getpwuid(os.geteuid()).pw_name if account is None else account
    cluster, log = data / "db", data / "server.log"
    try:
        _run([str(binaries / "initdb"), "-D", str(cluster), "-A", "trust", "-U", user], account)
        options = f"-k {data} -p {port} -c listen_addresses='' -c fsync=off"
        # The server's output goes to a log file: a pipe it inherited would never close, and run() would wait on it.
        _run([str(binaries / "pg_ctl"), "-D", str(cluster), "-l", str(log), "-o", options, "-w", "start"], account)
        yield f"postgresql://{user}@/{{database}}?host={data}&port={port}"
    finally:
        if (cluster / "postmaster.pid").exists():
            subprocess.run(
                [str(binaries / "pg_ctl"), "-D", str(cluster), "-m", "immediate", "stop"],
                user=account,
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


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The data directory `rmserve label` uses (its SQLite store), the environment pointing at it."""
    monkeypatch.delenv("RMSERVE_LABEL_DB", raising=False)
    monkeypatch.setenv("RMSERVE_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"
