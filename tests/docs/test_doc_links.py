"""The documents' links lead somewhere, the `make` targets they name exist, and nothing cites a file readers lack."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.docs.blocks import GENERATED

DOCS = ROOT / "docs"
# The repository's own documents: not what venvs (`.venv`, `.venv-bench`), builds or runs hold.
DOCUMENTS = sorted(
    path
    for path in ROOT.glob("**/*.md")
    if not any(part.startswith(".") or part in ("build", "runs", "site") for part in path.relative_to(ROOT).parts)
)
LINK = re.compile(r"\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """The anchor GitHub and MkDocs both give a plain heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(document: Path) -> set[str]:
    prose = re.sub(r"^```.*?^```", "", document.read_text(encoding="utf-8"), flags=re.MULTILINE | re.DOTALL)
    return {slug(heading) for heading in re.findall(r"^#+ (.+)$", prose, flags=re.MULTILINE)}  # not `# comment`


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_link_points_into_the_repository(document: Path) -> None:
    for target in LINK.findall(document.read_text(encoding="utf-8")):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        linked = (document.parent / path).resolve() if path else document
        if linked.relative_to(ROOT) in GENERATED:  # written by `make docs`, so only the built site has it
            assert document.is_relative_to(DOCS), f"{document.name} links to {path}, which only the built site has"
            continue
        assert linked.exists(), f"{document.name} links to missing {path}"
        if anchor and linked.suffix == ".md":
            assert anchor in anchors(linked), f"{document.name} links to {target}; headings: {sorted(anchors(linked))}"


@pytest.mark.parametrize("page", sorted(DOCS.glob("**/*.md")), ids=lambda path: str(path.relative_to(ROOT)))
def test_docs_pages_link_only_within_the_site(page: Path) -> None:
    """The site is built from docs/ alone: a link out of it is a broken link there (`mkdocs --strict`)."""
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        path = target.partition("#")[0]
        if path and not target.startswith(("http://", "https://", "mailto:")):
            assert (page.parent / path).resolve().is_relative_to(DOCS), f"{page.name} links out of docs/: {target}"


def test_every_make_target_the_documents_name_exists() -> None:
    targets = set(re.findall(r"^([\w.-]+):", (ROOT / "Makefile").read_text(encoding="utf-8"), flags=re.MULTILINE))
    for document in [*DOCUMENTS, ROOT / "pyproject.toml"]:
        for target in re.findall(r"`make ([\w-]+)", document.read_text(encoding="utf-8")):
            assert target in targets, f"{document.name} names `make {target}`, which the Makefile lacks"


def test_no_file_points_at_the_specification_outside_the_repository() -> None:
    citation = "SPEC" + " §"  # spelt apart, so this file does not cite it
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    citing = [
        name
        for name in tracked
        if name.endswith((".py", ".md", ".toml", ".yaml", ".yml", "Makefile"))
        and citation in (ROOT / name).read_text(encoding="utf-8", errors="replace")
    ]
    assert citing == [], "say what the section says instead of citing a document readers do not have"
