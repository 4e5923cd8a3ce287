"""Task files (`rmserve label add`) and ranking files (`rmserve label export`), one JSON object per line."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rmserve.errors import InvalidField
from rmserve.labels.tasks import NewTask, Ordering, parse_task
from rmserve.usage import UsageError


def read_tasks(path: Path, wanted: int) -> list[NewTask]:
    """Every line of `path` as a task; the first bad line is a UsageError naming the line and the field."""
    found = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record: Any = json.loads(line)
            except json.JSONDecodeError as error:
                raise UsageError(f"{path}:{number}: not JSON ({error.msg} at column {error.colno})") from None
            try:
                found.append(parse_task(record, wanted))
            except InvalidField as error:
                raise UsageError(f"{path}:{number}: {error.field}: {error.message}") from None
    if not found:
        raise UsageError(f'{path} holds no task: write one {{"prompt", "responses": [...]}} per line')
    return found


def ranking_records(orderings: Iterable[Ordering]) -> list[dict[str, Any]]:
    """One record per ordering, the responses best first, as `rmserve train` reads them; skips say nothing of
    which response is better, so they are left out."""
    return [
        {"prompt": ordering.prompt, "responses": ordering.ranked_responses()}
        for ordering in orderings
        if ordering.ranking is not None
    ]


def write_records(path: Path, records: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records), encoding="utf-8")
