"""`rmserve score FILE`: score a JSONL file through the same models and batcher as the server."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import IO

from tqdm import tqdm

from rmserve.config import Settings
from rmserve.engine.registry import ModelRegistry, Served
from rmserve.errors import ServiceError
from rmserve.protocols.inputs import item_exchanges
from rmserve.protocols.schemas import ChatItem, ItemBody, PairItem, parse
from rmserve.usage import UsageError

NumberedItem = tuple[int, PairItem | ChatItem]  # (line number, item)

# Offline scoring has no client waiting: a chunk may take as long as it needs.
OFFLINE_DEADLINE_S = 24 * 3600.0


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


def score_chunk(model: Served, chunk: list[NumberedItem], settings: Settings) -> list[dict[str, object]]:
    # The per-request item limit is an HTTP guard; a file chunk may be any size.
    exchanges = item_exchanges([item for _, item in chunk], model.input_format, settings.replace(max_items=len(chunk)))
    scored = model.score(exchanges, time.monotonic() + OFFLINE_DEADLINE_S)
    columns = zip(
        chunk,
        scored.scores.tolist(),
        scored.raw_scores.tolist(),
        scored.truncated,
        scored.tokens,
        scored.injected_turn,
        scored.flags,
        strict=True,
    )
    results: list[dict[str, object]] = [
        {
            "line": number,
            "score": score,
            "raw_score": raw,
            "truncated": truncated,
            "tokens": tokens,
            "injected_turn": injected,
            "flags": flags,
        }
        for (number, _), score, raw, truncated, tokens, injected, flags in columns
    ]
    if scored.ensemble is not None:  # an ensemble's line also carries its combinations and each member's score
        combinations = {name: values.tolist() for name, values in scored.ensemble.combinations().items()}
        members = {name: values.tolist() for name, values in scored.ensemble.members.items()}
        for index, result in enumerate(results):
            result.update({name: values[index] for name, values in combinations.items()})
            result["members"] = {name: values[index] for name, values in members.items()}
    return results


def score_file(
    settings: Settings, input_path: Path, output_path: Path | None, model_name: str | None, chunk_size: int
) -> int:
    """Score every line of `input_path`; write one JSON result per line, in input order."""
    registry = ModelRegistry.load(settings).start()
    model = registry.get(model_name)
    with input_path.open(encoding="utf-8") as lines:  # counted first, for the progress bar's total
        total = sum(1 for line in lines if line.strip())
    sink: IO[str]
    with output_path.open("w", encoding="utf-8") if output_path else nullcontext(sys.stdout) as sink:
        progress = tqdm(total=total, unit="item", desc=f"scoring with {model.name}", file=sys.stderr)
        try:
            for chunk in chunks(read_items(input_path), chunk_size):
                for result in score_chunk(model, chunk, settings):
                    sink.write(json.dumps(result) + "\n")
                progress.update(len(chunk))
        finally:
            progress.close()
            registry.stop()
    version = "" if model.served_version is None else f" v{model.served_version}"  # an ensemble has none
    print(f"scored {total} items with {model.name}{version}", file=sys.stderr)
    return 0
