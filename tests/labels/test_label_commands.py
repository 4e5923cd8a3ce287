"""`rmserve label add | export | stats` against a SQLite store in a temporary data directory."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from rmserve.cli import main
from rmserve.labels.agreement import kendall_tau
from rmserve.training.data import read_comparisons
from tests.labels.labelling import KIND_AND_SHORT, order_as_best_first, store_in, write_lines


@pytest.mark.parametrize(
    ("bad_line", "where"),
    [
        ({"prompt": "q", "responses": ["only one"]}, "tasks.jsonl:2: responses: must be a list of 2 to 9"),
        ({"prompt": "q", "responses": [str(n) for n in range(10)]}, "tasks.jsonl:2: responses: must be a list"),
        ({"prompt": "q", "responses": ["a", 3]}, "tasks.jsonl:2: responses[1]: must be a non-empty string"),
        ({"responses": ["a", "b"]}, "tasks.jsonl:2: prompt: must be a non-empty string"),
        ('{"prompt": "q", "responses": ["a", "b"', "tasks.jsonl:2: not JSON"),
    ],
)
def test_a_bad_task_line_is_one_line_naming_line_and_field_and_adds_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, data_dir: Path, bad_line: object, where: str
) -> None:
    tasks = write_lines(tmp_path / "tasks.jsonl", {"prompt": "p", "responses": ["a", "b"]}, bad_line)
    assert main(["label", "add", str(tasks)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("rmserve label: ") and where in line
    assert store_in(data_dir).counts().queued == 0


def test_added_tasks_are_ordered_and_exported_for_training(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, data_dir: Path
) -> None:
    tasks = write_lines(tmp_path / "tasks.jsonl", *KIND_AND_SHORT)
    assert main(["label", "add", str(tasks)]) == 0
    assert main(["label", "add", str(tasks)]) == 0  # adding again adds nothing
    assert "0 tasks added (2 were already in the store)" in capsys.readouterr().out
    store = store_in(data_dir)
    order_as_best_first(store, "ana", ["kind", "neutral", "rude"])
    skipped = store.lease("ana")
    assert skipped is not None
    store.submit(skipped.task_id, skipped.token, "ana", None)

    exported = tmp_path / "orderings.jsonl"
    assert main(["label", "export", str(exported)]) == 0
    records = [json.loads(line) for line in exported.read_text().splitlines()]
    assert records == [{"prompt": "Which is kind?", "responses": ["kind", "neutral", "rude"]}]
    message = capsys.readouterr().out
    assert "1 ranking records written" in message and "(1 skips left out)" in message
    (comparison,) = read_comparisons(exported)  # what `rmserve train` reads
    assert comparison.responses == ("kind", "neutral", "rude")


def test_stats_show_agreement_between_labellers(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, data_dir: Path
) -> None:
    tasks = write_lines(tmp_path / "tasks.jsonl", {"prompt": "p", "responses": ["a", "b", "c"]})
    assert main(["label", "add", str(tasks), "--orderings", "3"]) == 0
    store = store_in(data_dir)
    order_as_best_first(store, "ana", ["a", "b", "c"])
    order_as_best_first(store, "bob", ["a", "c", "b"])  # tau with ana 1/3, same best
    order_as_best_first(store, "cid", ["c", "b", "a"])  # tau -1 with ana, -1/3 with bob
    capsys.readouterr()
    assert main(["label", "stats"]) == 0
    table = dict(re.split(r"\s{2,}", line) for line in capsys.readouterr().out.splitlines())
    assert table["tasks done"] == "1"
    assert table["labeller pairs compared"] == "3"
    assert table["Kendall's tau (mean)"] == "-0.333"
    assert table["same best response"] == "33.3%"


def test_kendall_tau() -> None:
    assert kendall_tau([0, 1, 2, 3], [0, 1, 2, 3]) == 1.0
    assert kendall_tau([0, 1, 2, 3], [3, 2, 1, 0]) == -1.0
    assert kendall_tau([0, 1], [1, 0]) == -1.0
    assert kendall_tau([0, 1, 2], [1, 0, 2]) == pytest.approx(1 / 3)
