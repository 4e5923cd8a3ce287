"""Argilla 2.x records: a task is a record of text fields `prompt`, `response-1` ... `response-N`; each ordering is a
response to the `RankingQuestion` named `ranking`, its value the option names best first.

The shape is the one Argilla's SDK writes with `dataset.records.to_json(path)` and reads back with
`rg.Record.from_dict` (records as `{"id", "fields", "metadata", "suggestions", "responses": {question: [{"value",
"user_id", "status"}]}, "vectors", "status"}`; docs: how_to_guides/import_export.md, reference/argilla/records).
Argilla's server API spells a ranking as `[{"value": option, "rank": n}]`, which allows ties: both are read.
"""

from __future__ import annotations

from typing import Any

from rmserve.errors import InvalidField
from rmserve.labels.interchange import Answer, ImportedTask, StoredTask, need, option, ranking_of, task_of

QUESTION = "ranking"
PROMPT = "prompt"
LABELLER_PREFIX = "argilla:"  # + the Argilla user's id


def to_record(task: StoredTask) -> dict[str, Any]:
    """A task as an Argilla record, with the answers of Argilla's own users (a skip is a discarded response):
    Argilla keeps a response only for a user it knows."""
    fields = {PROMPT: task.prompt} | {option(index): text for index, text in enumerate(task.responses)}
    responses = [
        {
            "value": None if answer.ranking is None else [option(index) for index in answer.ranking],
            "user_id": answer.labeller.removeprefix(LABELLER_PREFIX),
            "status": "discarded" if answer.ranking is None else "submitted",
        }
        for answer in task.answers
        if answer.labeller.startswith(LABELLER_PREFIX)
    ]
    return {
        "id": task.key,
        "fields": fields,
        "metadata": {},
        "suggestions": {},
        "responses": {QUESTION: responses} if responses else {},
        "vectors": {},
        "status": "pending" if task.open else "completed",
    }


def from_record(record: Any, wanted: int) -> ImportedTask:
    """An Argilla record as a task: `prompt` and the other text fields, in order; its submitted rankings as
    orderings, discarded responses as skips, drafts left out."""
    fields = need(record, "fields", dict)
    prompt = need(fields, PROMPT, str, "fields")
    options = [name for name in fields if name != PROMPT]
    task = task_of(prompt, [need(fields, name, str, "fields") for name in options], wanted, "fields")
    question, responses = _ranking_responses(record)
    answers, tied = [], 0
    for number, response in enumerate(responses):
        where = f"responses.{question}[{number}]"
        labeller = LABELLER_PREFIX + need(response, "user_id", str, where)
        # Record.to_dict (what to_json writes) leaves the status out: a response without a value was discarded.
        status = response.get("status") or ("discarded" if response.get("value") is None else "submitted")
        if status == "draft":
            continue
        if status == "discarded":
            answers.append(Answer(labeller, None))
            continue
        names = _ranked_names(need(response, "value", list, where), f"{where}.value")
        if names is None:
            tied += 1
            continue
        answers.append(Answer(labeller, ranking_of(names, options, f"{where}.value")))
    key = record.get("id") if isinstance(record.get("id"), str) else None
    return ImportedTask(task, tuple(answers), key, tied)


def _ranking_responses(record: dict[str, Any]) -> tuple[str, list[Any]]:
    """The ranking question's name and its responses: the one named `ranking`, or the record's only question."""
    responses = record.get("responses") or {}
    if not isinstance(responses, dict):
        raise InvalidField("responses", "must be an object of question name to a list of responses")
    question = QUESTION if QUESTION in responses else next(iter(responses), QUESTION)
    if question != QUESTION and len(responses) > 1:
        raise InvalidField("responses", f"answers several questions; rmserve reads the one named {QUESTION!r}")
    answered = responses.get(question, [])
    if not isinstance(answered, list):
        raise InvalidField(f"responses.{question}", "must be a list of responses")
    return question, answered


def _ranked_names(value: list[Any], field: str) -> list[Any] | None:
    """Option names best first, from the SDK's `[name, ...]` or the API's `[{"value", "rank"}]`; None for a tie."""
    if all(isinstance(item, str) for item in value):
        return value
    if not all(isinstance(item, dict) and isinstance(item.get("rank"), int) for item in value):
        raise InvalidField(field, 'must list option names best first, or {"value": option, "rank": n} objects')
    ranks = [item["rank"] for item in value]
    if len(set(ranks)) < len(ranks):
        return None
    return [item.get("value") for item in sorted(value, key=lambda item: item["rank"])]
