"""The README's examples run, and print what the README shows; its links and `make` targets exist.

A fenced block right after `<!-- readme-test: NAME -->` is found here by NAME. Numbers the README
shows rounded match when they agree to the digits shown.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from bench.live_server import RunningServer, running_server
from tests.conftest import DEFAULT_REPOSITORY, ROOT, SHARED_DATA
from tests.test_cli import subcommands
from tests.training.test_train import write_preferences

README = ROOT / "README.md"
# The repository's own documents: not what venvs (`.venv`, `.venv-bench`), builds or runs hold.
DOCUMENTS = sorted(
    path
    for path in ROOT.glob("**/*.md")
    if not any(part.startswith(".") or part in ("build", "runs") for part in path.relative_to(ROOT).parts)
)
BLOCK = re.compile(r"<!-- readme-test: (?P<name>[\w-]+) -->\n```\w*\n(?P<code>.*?)\n```", re.DOTALL)
EXPECTED = "  # -> "
# What the README's train command would take minutes to do at full size, in seconds.
TINY_TRAINING = "--epochs 1 --vocab-size 300 --d-model 16 --layers 1 --heads 2 --max-length 48 --hash-buckets 1021"
SHELL_ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def readme_blocks(document: Path = README) -> dict[str, str]:
    return {match["name"]: match["code"] for match in BLOCK.finditer(document.read_text(encoding="utf-8"))}


class Shown(float):
    """A number as the README prints it, remembering how many decimals it shows."""

    decimals: int

    def __new__(cls, text: str) -> Shown:
        number = super().__new__(cls, text)
        number.decimals = len(text.partition(".")[2].partition("e")[0])
        return number


def shown(text: str) -> Any:
    return json.loads(text, parse_float=Shown)


def assert_shown(expected: Any, actual: Any, where: str = "") -> None:
    """`actual` is what the README shows as `expected`, to the digits it shows."""
    if isinstance(expected, Shown):
        tolerance = 0.5 * 10.0**-expected.decimals + 1e-6  # rounding, plus float32 noise between batches
        assert abs(actual - expected) <= tolerance, f"{where}: README shows {expected}, got {actual}"
    elif isinstance(expected, dict):
        assert set(actual) == set(expected), f"{where}: README shows keys {sorted(expected)}, got {sorted(actual)}"
        for key, value in expected.items():
            if key == "request_id":  # generated per request: any 32 hex digits
                assert re.fullmatch(r"[0-9a-f]{32}", actual[key]), f"{where}.request_id: {actual[key]!r}"
            else:
                assert_shown(value, actual[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), f"{where}: shows {expected}, got {actual}"
        for index, (value, got) in enumerate(zip(expected, actual, strict=True)):
            assert_shown(value, got, f"{where}[{index}]")
    else:
        assert actual == expected, f"{where}: README shows {expected!r}, got {actual!r}"


def sh(code: str, cwd: Path, **env: str) -> str:
    finished = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", code],
        cwd=cwd,
        env={**SHELL_ENV, **env},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert finished.returncode == 0, f"{code}\nexited {finished.returncode}:\n{finished.stderr}"
    return finished.stdout


@pytest.fixture(scope="module")
def default_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """`rmserve serve` with the committed default model, as after `make serve`."""
    with running_server(DEFAULT_REPOSITORY, tmp_path_factory.mktemp("readme") / "server.log") as server:
        yield server


def test_quickstart_curl_answers_what_the_readme_shows(default_server: RunningServer, tmp_path: Path) -> None:
    blocks = readme_blocks()
    port = default_server.base_url.rsplit(":", 1)[1]
    answer = sh(blocks["quickstart"].replace("localhost:8000", f"127.0.0.1:{port}"), tmp_path)
    assert_shown(shown(blocks["quickstart-answer"]), json.loads(answer), "curl")


def test_openrlhf_notes_show_what_get_reward_answers(default_server: RunningServer) -> None:
    blocks = readme_blocks(ROOT / "examples" / "openrlhf.md")
    answer = requests.post(f"{default_server.base_url}/get_reward", json=json.loads(blocks["get-reward"]), timeout=30)
    assert answer.headers["Content-Type"] == "application/json"
    assert_shown(shown(blocks["get-reward-answer"]), answer.json(), "/get_reward")


def test_client_snippet_returns_what_its_comments_show(default_server: RunningServer) -> None:
    namespace: dict[str, Any] = {}
    checked = 0
    for line in readme_blocks()["client"].replace("http://localhost:8000", default_server.base_url).splitlines():
        if EXPECTED in line:
            expression, expected = line.split(EXPECTED)
            assert_shown(shown(expected), eval(expression, namespace), expression)
            checked += 1
        elif line.strip():
            exec(line, namespace)
    assert checked >= 3


def test_score_command_prints_what_the_readme_shows(tmp_path: Path) -> None:
    blocks = readme_blocks()
    printed = sh(blocks["score"], tmp_path, RMSERVE_MODEL_REPOSITORY=str(DEFAULT_REPOSITORY))
    expected_lines = blocks["score-output"].splitlines()
    assert len(printed.splitlines()) == len(expected_lines)
    for number, (expected, line) in enumerate(zip(expected_lines, printed.splitlines(), strict=True), start=1):
        assert_shown(shown(expected), json.loads(line), f"line {number}")


@pytest.mark.slow  # train + export + eval of a tiny model: ~30 s
def test_train_export_eval_commands_run_at_a_small_size(tmp_path: Path) -> None:
    with gzip.open(tmp_path / "prefs.jsonl.gz", "wt", encoding="utf-8") as stream:
        stream.write(write_preferences(tmp_path / "prefs.jsonl", count=60).read_text(encoding="utf-8"))
    write_preferences(tmp_path / "heldout.jsonl", count=20, seed=1)
    printed = ""
    for line in readme_blocks()["train"].splitlines():
        command = line.partition("  #")[0].strip()
        if command.startswith("rmserve train"):
            command += " " + TINY_TRAINING
        printed += sh(command, tmp_path)
    for title in ("training summary", "export summary", "pairwise accuracy on 20 pairs of heldout.jsonl"):
        assert title in printed
    assert (tmp_path / "models" / "my-rm" / "1" / "manifest.json").is_file()
    assert (tmp_path / "runs" / "my-rm" / "report" / "report.png").is_file()


@pytest.mark.slow  # scores the 512 held-out pairs and fits the bag-of-words baseline: ~30 s
@pytest.mark.skipif(not (SHARED_DATA / "hh-rlhf-harmless-test.jsonl.gz").is_file(), reason="needs the HH-RLHF data")
def test_default_model_eval_prints_the_readme_table_and_the_committed_report(tmp_path: Path) -> None:
    blocks = readme_blocks()
    committed = "docs/eval-hh-harmless"
    assert committed in blocks["eval-default"]
    printed = sh(blocks["eval-default"].replace(committed, str(tmp_path / "report")), ROOT)
    assert printed.strip() == blocks["eval-default-output"].replace(committed, str(tmp_path / "report")).strip()
    fresh = json.loads((tmp_path / "report" / "report.json").read_text(encoding="utf-8"))
    committed_numbers = json.loads((ROOT / committed / "report.json").read_text(encoding="utf-8"))
    assert rounded(committed_numbers) == rounded(fresh), "the committed report is stale: regenerate it"


def rounded(value: Any) -> Any:
    """Floats to 6 significant digits, all the way down (float noise is not a stale report)."""
    if isinstance(value, float):
        return float(f"{value:.6g}")
    if isinstance(value, dict):
        return {key: rounded(item) for key, item in value.items()}
    if isinstance(value, list):
        return [rounded(item) for item in value]
    return value


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_link_points_into_the_repository(document: Path) -> None:
    text = document.read_text(encoding="utf-8")
    prose = re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)  # a `# comment` is no heading
    anchors = {slug(match) for match in re.findall(r"^#+ (.+)$", prose, flags=re.MULTILINE)}
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if target.startswith(("http://", "https://")):
            continue
        path, _, anchor = target.partition("#")
        if path:
            assert (document.parent / path).exists(), f"{document.name} links to missing {path}"
        elif anchor:
            assert anchor in anchors, f"{document.name} links to #{anchor}; headings: {sorted(anchors)}"


def test_every_make_target_the_documents_name_exists() -> None:
    targets = set(re.findall(r"^([\w.-]+):", (ROOT / "Makefile").read_text(encoding="utf-8"), flags=re.MULTILINE))
    for document in [*DOCUMENTS, ROOT / "pyproject.toml"]:
        for target in re.findall(r"`make ([\w-]+)", document.read_text(encoding="utf-8")):
            assert target in targets, f"{document.name} names `make {target}`, which the Makefile lacks"


@pytest.mark.parametrize("command", ["serve", "score", "bench"])
def test_the_command_table_lists_each_commands_flags(command: str) -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    (row,) = [line for line in lines if line.startswith(f"| `rmserve {command}")]
    shown_flags = set(re.findall(r"(?<![\w-])--?[a-z][\w-]*", row.split("|")[1] + row.split("|")[2]))
    actions = [a for a in subcommands()[command]._actions if a.option_strings and a.dest not in {"help", "debug"}]
    for action in actions:
        assert shown_flags & set(action.option_strings), f"README's rmserve {command} row lacks {action.option_strings}"
    known = {option for action in actions for option in action.option_strings}
    assert shown_flags <= known, f"README's rmserve {command} row names flags it does not have"


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
