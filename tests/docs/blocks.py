"""The documents' fenced blocks, and the marker above each that says how the tests run it.

The line right above every fenced block is one of:

    <!-- run: server -->                 shell or Python, against `rmserve serve` of models/ on localhost:8000
    <!-- run: checkout [slow] -->        shell, alone, in a fresh copy of the checkout
    <!-- run: session NAME [slow] -->    shell, the page's blocks of one NAME in order, in one shell and one copy
    <!-- output -->                      what the run block above prints (compared as `shown` says)
    <!-- output: shape -->               the same, where the numbers may differ
    <!-- no-run: REASON -->              not run, and why
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from tests.conftest import ROOT

# Pages `make docs` generates from the code and results at build time (and the reliability table the tests
# wrote before that), checked by their own tests.
GENERATED = frozenset(
    Path(page)
    for page in (
        "docs/api/openapi.md",
        "docs/operations/settings.md",
        "docs/operations/metrics.md",
        "docs/operations/cli.md",
        "docs/operations/reliability.md",
        "docs/reliability.md",
        "docs/models.md",
    )
)
MARKER = re.compile(r"<!-- (?P<verb>run|output|no-run)(?::\s*(?P<argument>.*?))? -->")
RUN = re.compile(r"(?P<kind>server|checkout|session (?P<session>[\w-]+))(?P<slow> slow)?")


@dataclass(frozen=True)
class Output:
    """What a run block prints, as the page shows it."""

    language: str
    text: str
    shape: bool  # numbers may differ (a trained model's scores)


@dataclass(frozen=True)
class Block:
    document: Path
    line: int  # of the opening fence, 1-based
    language: str
    code: str
    kind: str  # "server", "checkout", "session", "no-run"
    session: str | None
    slow: bool
    output: Output | None = None

    @property
    def where(self) -> str:
        return f"{self.document.relative_to(ROOT)}:{self.line}"


@dataclass(frozen=True)
class Session:
    """Blocks that run in order in one shell, in one fresh copy of the checkout."""

    document: Path
    name: str
    blocks: tuple[Block, ...]

    @property
    def slow(self) -> bool:
        return any(block.slow for block in self.blocks)


def documents() -> list[Path]:
    """README, CONTRIBUTING, the examples' notes and every page of docs/ that is written by hand."""
    pages = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "examples").glob("*.md"))]
    pages += [page for page in sorted((ROOT / "docs").glob("**/*.md")) if page.relative_to(ROOT) not in GENERATED]
    return [page for page in pages if page.is_file()]


def blocks(document: Path) -> list[Block]:
    """Every fenced block that runs, in page order, each with its output; a block without a marker fails."""
    lines = document.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    index = 0
    while index < len(lines):
        if not lines[index].lstrip().startswith("```"):
            index += 1
            continue
        end = next((j for j in range(index + 1, len(lines)) if lines[j].lstrip().startswith("```")), None)
        where = f"{document.relative_to(ROOT)}:{index + 1}"
        assert end is not None, f"{where}: the fence is never closed"
        marker = MARKER.fullmatch(lines[index - 1].strip()) if index else None
        assert marker, f"{where}: the line above a fenced block must say how it runs (tests/docs/blocks.py)"
        language, code = lines[index].strip()[3:].strip(), "\n".join(lines[index + 1 : end])
        verb, argument = marker["verb"], (marker["argument"] or "").strip()
        if verb == "output":
            assert found and found[-1].output is None and found[-1].kind != "no-run", f"{where}: output of no run block"
            assert argument in ("", "shape"), f"{where}: `output` or `output: shape`, not {argument!r}"
            found[-1] = replace(found[-1], output=Output(language, code, shape=argument == "shape"))
        elif verb == "no-run":
            assert argument, f"{where}: say why the block is not run"
            found.append(Block(document, index + 1, language, code, "no-run", None, slow=False))
        else:
            run = RUN.fullmatch(argument)
            assert run, f"{where}: `run: server`, `run: checkout [slow]` or `run: session NAME [slow]`"
            kind = "session" if run["session"] else run["kind"]
            found.append(Block(document, index + 1, language, code, kind, run["session"], slow=bool(run["slow"])))
        index = end + 1
    return found


def sessions(document: Path) -> list[Session]:
    """A page's shell runs in a checkout: each `checkout` block alone, each named session whole."""
    named: dict[str, list[Block]] = {}
    alone: list[Session] = []
    for block in blocks(document):
        if block.kind == "checkout":
            alone.append(Session(document, f"line {block.line}", (block,)))
        elif block.kind == "session" and block.session:
            named.setdefault(block.session, []).append(block)
    return alone + [Session(document, name, tuple(members)) for name, members in named.items()]
