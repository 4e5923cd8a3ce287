"""`rmserve score FILE`: score a JSONL file through the same scoring service, models and batcher as the server.

Each line of the output is one item's part of the answer `/v1/score` gives for its chunk.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import IO

from tqdm import tqdm

from rmserve.config import Settings
from rmserve.engine.registry import ModelRegistry
from rmserve.errors import ServiceError
from rmserve.protocols.inputs import Limits, item_exchanges
from rmserve.protocols.native import ScoreResponse, score_answer
from rmserve.protocols.schemas import ChatItem, ItemBody, PairItem, parse
from rmserve.scoring_service import ScoringService
from rmserve.usage import UsageError

NumberedItem = tuple[int, PairItem | ChatItem]  # (line number, item)

# Offline scoring has no client waiting: a chunk may take as long as it needs.
OFFLINE_DEADLINE_S = 24 * 3600.0

# /v1/score's per-item lists, and what one item's value is called on its line.
LINE_FIELDS = {
    "scores": "score",
    "raw_scores": "raw_score",
    "truncated": "truncated",
    "tokens": "tokens",
    "injected_turn": "injected_turn",
    "flags": "flags",
    "mean": "mean",
    "std": "std",
    "conservative": "conservative",
    "min": "min",
}


def read_items(path: Path) -> Iterator[NumberedItem]:
    """(line number, item) for every non-blank line; a bad line stops with its number."""
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                yield number, parse(ItemBody, json.loads(line)).root
            except json.JSONDecodeError as error:
                raise UsageError(f"{path}:{number}: not valid JSON ({error.msg}, column {error.colno})") from None
            except ServiceError as error:
                raise UsageError(f"{path}:{number}: {error.field}: {error.message}") from None


def chunks(items: Iterator[NumberedItem], size: int) -> Iterator[list[NumberedItem]]:
    chunk: list[NumberedItem] = []
    for numbered in items:
        chunk.append(numbered)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def answer_lines(numbers: Sequence[int], answer: ScoreResponse) -> list[dict[str, object]]:
    """One line per item: its line number, its value of each per-item list, and each ensemble member's score."""
    columns = answer.model_dump(include=set(LINE_FIELDS), exclude_unset=True)
    lines: list[dict[str, object]] = [
        {"line": number, **{LINE_FIELDS[name]: column[index] for name, column in columns.items()}}
        for index, number in enumerate(numbers)
    ]
    if answer.members is not None:
        for index, line in enumerate(lines):
            line["members"] = {name: scores[index] for name, scores in answer.members.items()}
    return lines


def score_file(
    settings: Settings, input_path: Path, output_path: Path | None, model_name: str | None, chunk_size: int
) -> int:
    """Score every line of `input_path`; write one JSON result per line, in input order."""
    scoring = ScoringService(ModelRegistry.load(settings).start(), settings.max_inflight_memory_bytes)
    model = scoring.model(model_name)
    limits = Limits(max_items=None, max_text_chars=settings.max_text_chars)  # a chunk may hold any number of items
    with input_path.open(encoding="utf-8") as lines:  # counted first, for the progress bar's total
        total = sum(1 for line in lines if line.strip())
    sink: IO[str]
    with output_path.open("w", encoding="utf-8") if output_path else nullcontext(sys.stdout) as sink:
        progress = tqdm(total=total, unit="item", desc=f"scoring with {model.name}", file=sys.stderr)
        try:
            for chunk in chunks(read_items(input_path), chunk_size):
                items = [item for _, item in chunk]
                exchanges = partial(item_exchanges, items, limits=limits)
                served, scored = scoring.score(model.name, exchanges, time.monotonic() + OFFLINE_DEADLINE_S)
                answer = score_answer(served.name, served.served_version, scored, request_id="")
                for line in answer_lines([number for number, _ in chunk], answer):
                    sink.write(json.dumps(line) + "\n")
                progress.update(len(chunk))
        finally:
            progress.close()
            scoring.drain()
    version = "" if model.served_version is None else f" v{model.served_version}"  # an ensemble has none
    print(f"scored {total} items with {model.name}{version}", file=sys.stderr)
    return 0
