"""The README is a landing page a newcomer can follow: short, the venv named before any `rmserve`
command, and a tutorial that trains, exports, serves and scores (run, with `git status` checked
clean afterwards, by tests/docs/test_doc_examples.py)."""

from __future__ import annotations

import re

from tests.conftest import ROOT
from tests.docs.blocks import blocks, sessions

README = ROOT / "README.md"
MAX_LINES = 200
COMMAND = re.compile(r"^\s*(?:[A-Z_]+=\S+\s+)*rmserve\s")  # `rmserve ...`, maybe after VAR=value


def test_readme_is_a_landing_page_of_at_most_200_lines() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_LINES, f"README.md has {len(lines)} lines: move the detail into docs/"


def test_readme_names_the_venv_before_its_first_rmserve_command() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    first_command = min(
        block.line + offset
        for block in blocks(README)
        for offset, line in enumerate(block.code.splitlines(), start=1)
        if COMMAND.match(line)
    )
    venv = next(number for number, line in enumerate(lines, start=1) if ".venv/bin/" in line)
    assert venv < first_command, f"line {first_command} runs rmserve before line {venv} says where it is"


def test_readme_tutorial_trains_exports_serves_scores_and_stops_in_a_scratch_repository() -> None:
    (tutorial,) = [session for session in sessions(README) if session.name == "tutorial"]
    code = "\n".join(block.code for block in tutorial.blocks)
    for step in ("rmserve train ../shared/data/", "rmserve export", "rmserve serve", "curl", "kill %1"):
        assert step in code, f"the tutorial lacks {step!r}"
    assert "--repository runs/" in code and "--model-repository runs/" in code, "export and serve a scratch repository"
    assert tutorial.slow, "the training run belongs in the slow suite"
