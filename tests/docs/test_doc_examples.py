"""Every example of the README, CONTRIBUTING and the docs runs, and prints what the page shows.

How each block runs is the marker above it (tests/docs/blocks.py). Shell runs in a fresh copy of
the checkout as it is now (tracked and new files, the working tree's versions), with `.venv` and
`../shared` beside it as in a clone, and must leave `git status` clean there: nothing a page tells
a reader to run may write into models/, docs/ or anywhere else git tracks.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.live_server import RunningServer, free_port, running_server
from tests.conftest import DEFAULT_REPOSITORY, ROOT
from tests.docs.blocks import Block, Session, blocks, documents, sessions
from tests.docs.shown import assert_output, assert_shown, shown_json

SHARED = ROOT.parent / "shared"
EXPECTED = "  # -> "
SEPARATOR = "----- the next block -----"
# A page's second server runs on 8001 (beside `make serve` on 8000); here on a free port.
SECOND_PORT = re.compile(r"\b8001\b")
# A training run: about 1.5 minutes on two quiet cores, several times that on a busy machine.
SLOW_TIMEOUT = pytest.mark.timeout(1200)
SHELL_ENV = {
    **{key: value for key, value in os.environ.items() if not key.startswith("RMSERVE_")},
    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
}


def readable(page: Path) -> bool:
    """The page's markers parse (`test_every_fenced_block_says_how_it_runs` says what is wrong if not)."""
    try:
        blocks(page)
    except AssertionError:
        return False
    return True


PAGES = [page for page in documents() if readable(page)]
SERVER_BLOCKS = [block for page in PAGES for block in blocks(page) if block.kind == "server"]
SESSIONS = [session for page in PAGES for session in sessions(page)]


def run_shell(code: str, cwd: Path, where: str) -> str:
    finished = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", code],
        cwd=cwd,
        env=SHELL_ENV,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    printed = f"{finished.stdout[-2000:]}\n{finished.stderr[-4000:]}"
    assert finished.returncode == 0, f"{where}\n{code}\nexited {finished.returncode}:\n{printed}"
    return finished.stdout


@pytest.fixture(scope="module")
def default_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """`rmserve serve` with the committed models, as after `make serve`."""
    with running_server(DEFAULT_REPOSITORY, tmp_path_factory.mktemp("docs") / "server.log") as server:
        yield server


@pytest.fixture(scope="module")
def checkout_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The working tree as a fresh repository with one commit: what a clone of this change would hold."""
    copy = tmp_path_factory.mktemp("checkout-copy")
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file() and not source.is_symlink():  # a deleted file is still listed; .venv is a link
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name)
    git = ["git", "-c", "user.name=docs", "-c", "user.email=docs@localhost"]
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "the working tree"]):
        subprocess.run([*git, *command], cwd=copy, check=True)
    return copy


@pytest.fixture
def fresh_clone(checkout_copy: Path, tmp_path: Path) -> Iterator[Path]:
    """A clone with `.venv` (this interpreter's) inside and `../shared` (the data) beside it."""
    clone = tmp_path / "rmserve"
    subprocess.run(["git", "clone", "-q", str(checkout_copy), str(clone)], check=True)
    (clone / ".venv").symlink_to(Path(sys.prefix))
    with (clone / ".git" / "info" / "exclude").open("a", encoding="utf-8") as exclude:
        exclude.write(".venv\n")  # a link, which the `.venv/` rule (directories) does not cover
    if SHARED.is_dir():
        (tmp_path / "shared").symlink_to(SHARED)
    yield clone
    shutil.rmtree(clone, ignore_errors=True)  # 50 MB of models a run


def needs_data(code: str) -> bool:
    return "../shared/data/" in code and not (SHARED / "data" / "hh-rlhf-harmless-test.jsonl.gz").is_file()


@pytest.mark.parametrize("block", SERVER_BLOCKS, ids=lambda block: block.where)
def test_server_example_prints_what_the_page_shows(block: Block, default_server: RunningServer, tmp_path: Path) -> None:
    address = default_server.base_url.removeprefix("http://")
    code = block.code.replace("localhost:8000", address)
    if block.language == "python":
        run_python(code, block.where)
        return
    printed = run_shell(code, tmp_path, block.where)
    if block.output is not None:
        assert_output(block.output, printed, block.where)


def run_python(code: str, where: str) -> None:
    """Run a snippet line by line; a line `expression  # -> value` must evaluate to the value shown."""
    namespace: dict[str, Any] = {}
    for line in code.splitlines():
        if EXPECTED in line:
            expression, expected = line.split(EXPECTED)
            assert_shown(shown_json(expected), eval(expression, namespace), f"{where}: {expression}")
        elif line.strip():
            exec(line, namespace)


def session_id(session: Session) -> str:
    return f"{session.document.relative_to(ROOT)}:{session.name}"


def session_params() -> list[Any]:
    return [
        pytest.param(session, marks=[pytest.mark.slow, SLOW_TIMEOUT] if session.slow else [], id=session_id(session))
        for session in SESSIONS
    ]


@pytest.mark.parametrize("session", session_params())
def test_shell_example_runs_in_a_fresh_clone_and_leaves_git_status_clean(session: Session, fresh_clone: Path) -> None:
    if any(needs_data(block.code) for block in session.blocks):
        pytest.skip("needs the HH-RLHF data in ../shared/data")
    port = str(free_port())
    script = ["trap 'kill $(jobs -p) 2>/dev/null || true; wait' EXIT"]  # a server a failed block left running
    for block in session.blocks:
        script += [SECOND_PORT.sub(port, block.code), f"printf '\\n%s\\n' '{SEPARATOR}'"]
    printed = run_shell("\n".join(script), fresh_clone, f"{session.document.name}: {session.name}").split(SEPARATOR)
    for block, block_printed in zip(session.blocks, printed, strict=False):
        if block.output is not None:
            assert_output(block.output, block_printed.strip("\n"), block.where)
    git_status = ["git", "status", "--porcelain"]
    status = subprocess.run(git_status, cwd=fresh_clone, capture_output=True, text=True, check=True)
    assert status.stdout == "", f"{session.document.name}: {session.name} changed what git tracks:\n{status.stdout}"


@pytest.mark.parametrize("page", documents(), ids=lambda page: str(page.relative_to(ROOT)))
def test_every_fenced_block_says_how_it_runs(page: Path) -> None:
    """`blocks` fails naming the line of a fenced block with no marker above it, or one it cannot read."""
    blocks(page)
