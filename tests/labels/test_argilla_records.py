"""Argilla 2.x records in and out of the label store: the documented record shape, round trips, and Argilla's own SDK.

The records below mirror Argilla's docs: `dataset.records.to_json` writes `Record.to_dict()` per record
(docs/how_to_guides/import_export.md, "Export records"; reference/argilla/records/records.md), responses keyed by
question name, `{"value", "user_id"}` each (reference/argilla/records/responses.md), and the comparison dataset of
the "Collect comparison data" guide: fields `prompt`, `response-1`, `response-2`, a RankingQuestion
`response_ranking` with those options.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rmserve.cli import main
from rmserve.labels import argilla_records
from rmserve.labels.interchange import Answer, ImportedTask
from rmserve.labels.store import LabelStore
from rmserve.labels.task_import import import_tasks
from rmserve.labels.tasks import NewTask
from tests.labels.labelling import order_as_best_first, store_in, write_json, write_lines
from tests.labels.test_store import MakeStore

ANA, BOB = "0f1e6a0c-1a43-4c2b-9d3c-6f1f0b3c2a11", "7d2b9f8e-5c4a-4e3b-8a1d-2c9e0f4b5a66"
# As `dataset.records.to_json(path)` writes it: Record.to_dict() per record, ids from the server.
EXPORTED = [
    {
        "id": "3b7c1d2e-0000-4000-8000-000000000001",
        "fields": {
            "prompt": "How do I keep basil alive?",
            "response-1": "Put it in the fridge.",
            "response-2": "Water it when the soil is dry and give it sun.",
        },
        "metadata": {},
        "suggestions": {},
        "responses": {
            "response_ranking": [
                {"value": ["response-2", "response-1"], "user_id": ANA},
                {"value": ["response-2", "response-1"], "user_id": BOB},
            ]
        },
        "vectors": {},
        "status": "completed",
        "_server_id": "9a8b7c6d-0000-4000-8000-000000000001",
    },
    {
        "id": "3b7c1d2e-0000-4000-8000-000000000002",
        "fields": {"prompt": "Is the sea salty?", "response-1": "Yes.", "response-2": "No, it is sweet."},
        "metadata": {},
        "suggestions": {},
        "responses": {"response_ranking": [{"value": None, "user_id": ANA}]},  # discarded: to_dict keeps no status
        "vectors": {},
        "status": "completed",
        "_server_id": "9a8b7c6d-0000-4000-8000-000000000002",
    },
]


def test_an_argilla_export_becomes_tasks_and_orderings_for_training(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, data_dir: Path
) -> None:
    export = write_json(tmp_path / "argilla.json", EXPORTED)
    assert main(["label", "add", "--format", "argilla", str(export)]) == 0
    assert "2 tasks added" in capsys.readouterr().out
    assert main(["label", "add", "--format", "argilla", str(export)]) == 0  # again: nothing twice
    assert capsys.readouterr().out.startswith("0 tasks added (2 were already in the store), 0 orderings")
    rankings = tmp_path / "rankings.jsonl"
    assert main(["label", "export", str(rankings)]) == 0
    best_first = ["Water it when the soil is dry and give it sun.", "Put it in the fridge."]
    assert [json.loads(line) for line in rankings.read_text().splitlines()] == [
        {"prompt": "How do I keep basil alive?", "responses": best_first}
    ] * 2
    assert "(1 skips left out)" in capsys.readouterr().out
    labellers = {ordering.labeller for ordering in store_in(data_dir).orderings()}
    assert labellers == {f"argilla:{ANA}", f"argilla:{BOB}"}


def test_the_apis_ranks_are_read_and_a_ranking_with_ties_is_left_out() -> None:
    record = dict(EXPORTED[0])
    record["responses"] = {
        "ranking": [
            {"value": [{"value": "response-1", "rank": 2}, {"value": "response-2", "rank": 1}], "user_id": ANA},
            {"value": [{"value": "response-1", "rank": 1}, {"value": "response-2", "rank": 1}], "user_id": BOB},
            {"value": ["response-1", "response-2"], "user_id": BOB, "status": "draft"},
        ]
    }
    imported = argilla_records.from_record(record, wanted=1)
    assert [answer.ranking for answer in imported.answers] == [(1, 0)]
    assert imported.tied == 1


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"fields": {"prompt": "p", "response-1": "only one"}}, "[1].fields: must be a list of 2 to 9"),
        ({"fields": {"response-1": "a", "response-2": "b"}}, "[1].fields.prompt: must be a non-empty string"),
        (
            {"responses": {"ranking": [{"value": ["response-1"], "user_id": ANA}]}},
            "[1].responses.ranking[0].value: must name each of response-1, response-2 once",
        ),
        ({"responses": {"ranking": [{"value": ["response-2", "response-1"]}]}}, "[1].responses.ranking[0].user_id"),
        ({"responses": {"a": [], "b": []}}, "[1].responses: answers several questions"),
    ],
)
def test_a_bad_record_is_one_line_naming_it_and_its_field_and_adds_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, data_dir: Path, change: dict[str, Any], where: str
) -> None:
    export = write_json(tmp_path / "argilla.json", [EXPORTED[0], EXPORTED[1] | change])
    assert main(["label", "add", "--format", "argilla", str(export)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert f"argilla.json: {where}" in line
    assert store_in(data_dir).counts().queued == 0


def rmserve_export(tmp_path: Path, data_dir: Path) -> list[dict[str, Any]]:
    """A store with a task of its own that a labeller ordered on /label, and Argilla's export, exported for Argilla."""
    tasks = write_lines(
        tmp_path / "tasks.jsonl", {"prompt": "Which is kind?", "responses": ["rude", "kind", "neutral"]}
    )
    assert main(["label", "add", str(tasks)]) == 0
    order_as_best_first(store_in(data_dir), "ana", ["kind", "neutral", "rude"])
    assert main(["label", "add", "--format", "argilla", str(write_json(tmp_path / "argilla.json", EXPORTED))]) == 0
    exported = tmp_path / "for-argilla.json"
    assert main(["label", "export", "--format", "argilla", str(exported)]) == 0
    return json.loads(exported.read_text())  # type: ignore[no-any-return]


def test_every_task_goes_to_argilla_with_its_users_answers_and_comes_back_once(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, data_dir: Path
) -> None:
    records = rmserve_export(tmp_path, data_dir)
    kind, basil, sea = records
    assert basil["fields"] == EXPORTED[0]["fields"]
    assert basil["responses"]["ranking"] == [
        {"value": ["response-2", "response-1"], "user_id": user, "status": "submitted"} for user in (ANA, BOB)
    ]
    assert sea["responses"] == {"ranking": [{"value": None, "user_id": ANA, "status": "discarded"}]}
    assert kind["fields"] == {
        "prompt": "Which is kind?",
        "response-1": "rude",
        "response-2": "kind",
        "response-3": "neutral",
    }
    assert kind["responses"] == {}  # ana ordered it on /label: Argilla knows no such user
    assert [record["status"] for record in records] == ["completed", "completed", "pending"]
    capsys.readouterr()
    assert main(["label", "add", "--format", "argilla", str(write_json(tmp_path / "back.json", records))]) == 0
    assert capsys.readouterr().out.startswith("0 tasks added (3 were already in the store), 0 orderings and 0 skips")


def test_argillas_own_sdk_reads_the_export_and_what_it_writes_comes_back(tmp_path: Path, data_dir: Path) -> None:
    rg = pytest.importorskip("argilla", reason="Argilla's SDK (the dev extra's argilla) is not installed")
    records = rmserve_export(tmp_path, data_dir)
    # What `dataset.records.log([rg.Record.from_dict(r) for r in records])` sends, and what Argilla's `to_json`
    # writes back: the responses without their status.
    sent = [rg.Record.from_dict(record) for record in records]
    assert [(response.value, response.status) for response in sent[2].responses] == [(None, "discarded")]
    through_argilla = write_json(tmp_path / "through-argilla.json", [record.to_dict() for record in sent])
    fresh = tmp_path / "fresh"
    assert main(["label", "add", "--format", "argilla", str(through_argilla), "--data-dir", str(fresh)]) == 0
    answers = [(o.prompt, o.labeller, o.ranking) for o in store_in(fresh).orderings()]
    assert answers == [
        ("How do I keep basil alive?", f"argilla:{ANA}", (1, 0)),
        ("How do I keep basil alive?", f"argilla:{BOB}", (1, 0)),
        ("Is the sea salty?", f"argilla:{ANA}", None),
    ]


def test_an_import_joins_the_task_it_names_on_any_database(make_store: MakeStore) -> None:
    store: LabelStore = make_store()
    review = NewTask("gamed", ("a", "b"), source="review:tiny")  # its key is not its content's
    store.add([review])
    imported = ImportedTask(NewTask("gamed", ("b", "a")), (Answer(f"argilla:{ANA}", (0, 1)),), key=review.key)
    summary = import_tasks(store, [imported, imported])
    assert (summary.tasks, summary.orderings, summary.held) == (0, 1, 1)
    (ordering,) = store.orderings()
    assert ordering.ranked_responses() == ["b", "a"]  # the file's response order, mapped to the store's
    assert store.counts().done == 1
