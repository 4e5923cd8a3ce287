"""`rmserve score FILE` gives the same scores as the HTTP path, in input order."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from rmserve.cli import main

ITEMS = [
    {"prompt": "How do I bake bread?", "response": "Mix flour, water, yeast and salt, knead, bake at 230C."},
    {"prompt": "How do I bake bread?", "response": "no"},
    {"messages": [{"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": "Paris."}]},
    {"prompt": "Tell me a long story.", "response": "Once upon a time " * 40},
]


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_offline_scores_equal_http_scores(client: FlaskClient, tiny_repository: Path, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", ITEMS)
    output = tmp_path / "out.jsonl"
    assert (
        main(["score", str(source), "-o", str(output), "--model-repository", str(tiny_repository), "--chunk-size", "3"])
        == 0
    )
    offline = [json.loads(line) for line in output.read_text().splitlines()]
    online = client.post("/v1/score", json={"items": ITEMS}).get_json()
    assert [row["line"] for row in offline] == [1, 2, 3, 4]
    # Equal to float32 precision: other batch mates change the padded width and so the summation order.
    assert [row["score"] for row in offline] == pytest.approx(online["scores"], rel=1e-6)
    assert [row["raw_score"] for row in offline] == pytest.approx(online["raw_scores"], rel=1e-6)
    assert [row["truncated"] for row in offline] == online["truncated"] == [False, False, False, True]
    assert [row["tokens"] for row in offline] == online["tokens"]
    assert [row["flags"] for row in offline] == online["flags"] == [[], [], [], ["truncated"]]


def test_a_bad_line_stops_with_its_number(
    tiny_repository: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [ITEMS[0], {"prompt": "x", "response": 5}])
    assert main(["score", str(source), "--model-repository", str(tiny_repository)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(f"rmserve score: {source}:2: response")


def test_a_chunk_may_hold_more_items_than_a_request(
    tiny_repository: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RMSERVE_MAX_ITEMS", "2")  # an HTTP request's limit: a file is not a request
    source = write_jsonl(tmp_path / "in.jsonl", ITEMS)
    output = tmp_path / "out.jsonl"
    assert main(["score", str(source), "-o", str(output), "--model-repository", str(tiny_repository)]) == 0
    assert [json.loads(line)["line"] for line in output.read_text().splitlines()] == [1, 2, 3, 4]
