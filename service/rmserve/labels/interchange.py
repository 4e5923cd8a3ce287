"""Tasks and answers exchanged with other labelling tools (Argilla, Label Studio), and the JSON files that hold them.

Both tools export and import a JSON array, one element per task; each format's module turns an element into an
`ImportedTask` and a stored task into an element. A bad element is a UsageError naming where it is:
`FILE: [3].responses.ranking[0].value: ...`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import UnionType
from typing import Any

from rmserve.errors import InvalidField
from rmserve.labels.tasks import NewTask, Ordering, parse_task
from rmserve.usage import UsageError

OPTION_PREFIX = "response-"  # response-1 ... response-9: the responses' names in both tools' files


@dataclass(frozen=True)
class Answer:
    """One labeller's answer another tool recorded: response indices best first, or None for a skip."""

    labeller: str
    ranking: tuple[int, ...] | None


@dataclass(frozen=True)
class ImportedTask:
    """A task from another tool's file, the answers it holds, and the store's key when the file names one."""

    task: NewTask
    answers: tuple[Answer, ...]
    key: str | None = None  # set when rmserve exported the task: its answers join that task
    tied: int = 0  # rankings with ties, left out: the store records strict orders


@dataclass(frozen=True)
class StoredTask:
    """A task as the store holds it, with every answer, for export to another tool."""

    key: str
    prompt: str
    responses: tuple[str, ...]  # the task's own order
    wanted: int
    answers: tuple[Ordering, ...]

    @property
    def open(self) -> bool:
        """Whether it still wants orderings."""
        return sum(answer.ranking is not None for answer in self.answers) < self.wanted


def option(index: int) -> str:
    """The name of the response at `index` (0-based): `response-1`, ..."""
    return f"{OPTION_PREFIX}{index + 1}"


@dataclass
class ImportSummary:
    """What an import added, and what it left out."""

    tasks: int = 0  # new to the store
    orderings: int = 0
    skips: int = 0
    held: int = 0  # answers the store already held (the same labeller, on an earlier import or export)
    tied: int = 0


def read_imported(path: Path, parse: Callable[[Any, int], ImportedTask], wanted: int) -> list[ImportedTask]:
    """The JSON array in `path`, each element parsed into a task wanting `wanted` orderings; the first bad element
    is a UsageError naming it and its field."""
    try:
        elements = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise UsageError(f"{path}: not JSON ({error.msg} at line {error.lineno}, column {error.colno})") from None
    if not isinstance(elements, list) or not elements:
        raise UsageError(f"{path}: must be a JSON array of tasks, as the tool exports them")
    found = []
    for number, element in enumerate(elements):
        try:
            found.append(parse(element, wanted))
        except InvalidField as error:
            field = f"[{number}]" if error.field in (None, "") else f"[{number}].{error.field}"
            raise UsageError(f"{path}: {field}: {error.message}") from None
    return found


def write_json(path: Path, elements: Iterable[Any]) -> int:
    """Write `elements` as one JSON array (what both tools import); returns how many."""
    written = list(elements)
    path.write_text(json.dumps(written, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return len(written)


def need(record: Any, name: str, kind: type | UnionType, where: str = "") -> Any:
    """`record[name]` if `record` is an object holding a non-empty `kind` there; else InvalidField naming the field."""
    field = f"{where}.{name}" if where else name
    if not isinstance(record, dict):
        raise InvalidField(where, "must be a JSON object")
    value = record.get(name)
    if not isinstance(value, kind) or isinstance(value, bool) or (isinstance(value, str | list | dict) and not value):
        raise InvalidField(field, f"must be a non-empty {_KIND_NAMES[kind]}")
    return value


_KIND_NAMES: dict[type | UnionType, str] = {
    str: "string",
    list: "list",
    dict: "object",
    int | str: "id",
    int | str | dict: "user id (or an object holding one)",
}


def task_of(prompt: str, responses: list[str], wanted: int, field: str) -> NewTask:
    """A task of these texts (2-9 distinct responses), or InvalidField naming `field`, where the file holds them."""
    try:
        return parse_task({"prompt": prompt, "responses": responses}, wanted)
    except InvalidField as error:
        raise InvalidField(field, error.message) from None


def ranking_of(names: list[Any], options: list[str], field: str) -> tuple[int, ...]:
    """Option names best first as response indices; every option exactly once, else InvalidField."""
    if sorted(map(str, names)) != sorted(options) or len(names) != len(options):
        raise InvalidField(field, f"must name each of {', '.join(options)} once, best first, got {names}")
    return tuple(options.index(name) for name in names)
