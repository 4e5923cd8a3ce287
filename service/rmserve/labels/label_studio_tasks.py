"""Label Studio tasks for ordering responses, in the two templates its docs give for it, and their annotations.

- Ranker (the "LLM Ranker" template): data `{"prompt", "items": [{"id", "title", "body"}]}` shown by a `List` and
  ordered by a `Ranker`; a result `{"type": "ranker", "value": {"ranker": {"<ranker name>": [ids best first]}}}`
  (the Ranker tag's page shows an older `{"ranker": [ids]}`; both are read).
- Pairwise (the "Human Preferences collection for RLHF" template): data `{"prompt", "answer1", "answer2"}`; a
  result `{"type": "pairwise", "value": {"selected": "left" | "right"}}`.

Label Studio exports a JSON array of tasks, each with its `annotations` (`result`, `was_cancelled`, `completed_by`),
and imports the same array. rmserve writes ranker tasks, its key in `data.rmserve_key` so the annotations come back
to the task they were asked for.
"""

from __future__ import annotations

from typing import Any

from rmserve.errors import InvalidField
from rmserve.labels.interchange import Answer, ImportedTask, StoredTask, need, option, ranking_of, task_of

ITEMS = "items"
PAIR = ("answer1", "answer2")  # the Pairwise template's left and right texts
KEY = "rmserve_key"
LABELLER_PREFIX = "label-studio:"  # + the annotation's completed_by (the Label Studio user's id)


def to_task(task: StoredTask) -> dict[str, Any]:
    """A task as Label Studio ranker data, without annotations (Label Studio would credit them to whoever imports)."""
    items = [
        {"id": option(index), "title": f"Response {index + 1}", "body": text}
        for index, text in enumerate(task.responses)
    ]
    return {"data": {"prompt": task.prompt, ITEMS: items, KEY: task.key}}


def from_task(element: Any, wanted: int) -> ImportedTask:
    """A Label Studio task (ranker or pairwise) as a task; submitted annotations as orderings, cancelled or empty ones
    as skips."""
    data = need(element, "data", dict)
    prompt = need(data, "prompt", str, "data")
    if ITEMS in data:
        items = need(data, ITEMS, list, "data")
        ids = [str(need(item, "id", str | int, f"data.{ITEMS}[{n}]")) for n, item in enumerate(items)]
        texts = [need(item, "body", str, f"data.{ITEMS}[{n}]") for n, item in enumerate(items)]
        task = task_of(prompt, texts, wanted, f"data.{ITEMS}")
    elif any(name in data for name in PAIR):
        ids = ["left", "right"]
        task = task_of(prompt, [need(data, name, str, "data") for name in PAIR], wanted, "data")
    else:
        raise InvalidField("data", f"must hold {ITEMS!r} (a Ranker's list) or {' and '.join(PAIR)} (a Pairwise's)")
    annotations = element.get("annotations") or []
    if not isinstance(annotations, list):
        raise InvalidField("annotations", "must be a list")
    answers = tuple(_answer(annotation, f"annotations[{n}]", ids) for n, annotation in enumerate(annotations))
    key = data.get(KEY) if isinstance(data.get(KEY), str) else None
    return ImportedTask(task, answers, key)


def _answer(annotation: Any, where: str, ids: list[str]) -> Answer:
    labeller = LABELLER_PREFIX + _annotator(annotation, where)
    results = [] if annotation.get("was_cancelled") else annotation.get("result") or []
    if not isinstance(results, list):
        raise InvalidField(f"{where}.result", "must be a list of results")
    for number, result in enumerate(results):
        kind = result.get("type") if isinstance(result, dict) else None
        field = f"{where}.result[{number}].value"
        if kind == "ranker" and ids != ["left", "right"]:
            return Answer(labeller, ranking_of(_ranked_ids(result.get("value"), field), ids, f"{field}.ranker"))
        if kind == "pairwise" and ids == ["left", "right"]:
            selected = result.get("value", {}).get("selected") if isinstance(result.get("value"), dict) else None
            if selected not in ids:
                raise InvalidField(f"{field}.selected", "must be 'left' or 'right'")
            return Answer(labeller, (0, 1) if selected == "left" else (1, 0))
    return Answer(labeller, None)  # nothing ordered: the annotator skipped


def _annotator(annotation: Any, where: str) -> str:
    """The annotation's `completed_by`: a user id, or (in expanded exports) an object holding one."""
    completed_by = need(annotation, "completed_by", int | str | dict, where)
    if isinstance(completed_by, dict):
        completed_by = need(completed_by, "id", int | str, f"{where}.completed_by")
    return str(completed_by)


def _ranked_ids(value: Any, field: str) -> list[Any]:
    """The ids best first: `{"ranker": {"<name>": [ids]}}`, or the older `{"ranker": [ids]}`."""
    ranked = value.get("ranker") if isinstance(value, dict) else None
    if isinstance(ranked, dict) and len(ranked) == 1:
        ranked = next(iter(ranked.values()))
    if not isinstance(ranked, list):
        raise InvalidField(f"{field}.ranker", "must be the Ranker's ids best first (a Ranker without Buckets)")
    return ranked
