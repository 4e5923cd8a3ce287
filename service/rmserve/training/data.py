"""Preference data in the formats users have, read into one shape: a prompt and its responses, best first.

Formats (one JSON object per line, plain or gzipped JSONL):

- HH-RLHF transcripts `{"chosen": "\\n\\nHuman: ...\\n\\nAssistant: ...", "rejected": ...}`;
  the prompt is the dialogue up to the last `"\\n\\nAssistant:"`.
- `{"prompt": str, "chosen": str, "rejected": str}`.
- TRL conversational: `{"prompt": [messages], "chosen": [messages], "rejected": [messages]}`, or
  `{"chosen": [messages], "rejected": [messages]}` with full conversations.
- Rankings `{"prompt": str | [messages], "responses": [best, ..., worst]}`, or with an explicit
  `"ranking": [index, ...]` (best first) over `responses` in any order.

Pairs may carry a numeric `"margin"` (how much better `chosen` is), used by the Bradley–Terry loss.
All text is rendered through `rmserve.core.transcript.Transcript`, the layout serving uses for
rmserve's own models (imported models re-read these prompts through `rmserve.core.formats`).
"""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rmserve.core.transcript import Transcript
from rmserve.errors import InvalidField
from rmserve.usage import UsageError


class DataError(UsageError, ValueError):
    """A line of a preference file that cannot be read; the message names file and line (no traceback)."""


class RecordError(ValueError):
    """A field of one record is wrong (becomes a DataError naming file and line)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")


@dataclass(frozen=True)
class Comparison:
    """One prompt and K >= 2 responses ordered best first (K = 2 is a preference pair)."""

    prompt: str
    responses: tuple[str, ...]
    margin: float | None = None


@dataclass(frozen=True)
class LineRange:
    """1-based inclusive line numbers, as people quote them ("1-1800")."""

    first: int
    last: int | None = None

    @classmethod
    def parse(cls, text: str) -> LineRange:
        first, _, last = text.partition("-")
        try:
            line_range = cls(int(first), int(last) if last else None)
        except ValueError:
            raise ValueError(f"line range must look like 1-1800 or 1801-, got {text!r}") from None
        if line_range.first < 1 or (line_range.last is not None and line_range.last < line_range.first):
            raise ValueError(f"empty or invalid line range {text!r}")
        return line_range

    def __contains__(self, line_number: int) -> bool:
        return self.first <= line_number and (self.last is None or line_number <= self.last)

    def __str__(self) -> str:
        return f"{self.first}-{'' if self.last is None else self.last}"


def read_comparisons(
    path: Path, lines: LineRange | None = None, input_format: Transcript | None = None
) -> list[Comparison]:
    """Read a preference file (any supported format, `.gz` or plain), optionally only some lines."""
    input_format = input_format or Transcript()
    comparisons = []
    for line_number, record in _records(path):
        if lines is not None and line_number not in lines:
            continue
        try:
            comparisons.append(parse_record(record, input_format))
        except (InvalidField, TypeError, KeyError, ValueError) as error:  # InvalidField: from the input format
            raise DataError(f"{path}:{line_number}: {_describe(error)}") from error
    if not comparisons:
        raise DataError(f"{path}: no comparisons in lines {lines or 'all'}")
    return comparisons


def parse_record(record: Any, input_format: Transcript) -> Comparison:
    """One JSON object in any supported format -> a Comparison."""
    if not isinstance(record, Mapping):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    if "responses" in record:
        return _ranking(record, input_format)
    if "chosen" in record and "rejected" in record:
        margin = record.get("margin")
        if margin is not None and not isinstance(margin, int | float):
            raise RecordError("margin", "must be a number")
        prompt, chosen, rejected = _pair(record, input_format)
        return Comparison(prompt, (chosen, rejected), None if margin is None else float(margin))
    raise ValueError(f"unknown format: keys {sorted(record)}; expected chosen/rejected or prompt/responses")


def split_dev(
    comparisons: Sequence[Comparison], fraction: float, seed: int
) -> tuple[list[Comparison], list[Comparison]]:
    """Hold out a seeded random `fraction` of the training comparisons for early stopping."""
    order = list(range(len(comparisons)))
    random.Random(seed).shuffle(order)
    dev_size = round(len(comparisons) * fraction)
    dev = set(order[:dev_size])
    train = [c for i, c in enumerate(comparisons) if i not in dev]
    return train, [c for i, c in enumerate(comparisons) if i in dev]


def pairs(comparisons: Sequence[Comparison]) -> list[tuple[str, str, str]]:
    """Every (prompt, better, worse) pair implied by the comparisons' orderings."""
    return [
        (c.prompt, c.responses[i], c.responses[j])
        for c in comparisons
        for i in range(len(c.responses))
        for j in range(i + 1, len(c.responses))
    ]


def _records(path: Path) -> Iterator[tuple[int, Any]]:
    opener = gzip.open if _is_gzip(path) else open
    with opener(path, "rt", encoding="utf-8") as stream:
        for line_number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                yield line_number, json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"{path}:{line_number}: not valid JSON ({error.msg}, column {error.colno})") from None


def _is_gzip(path: Path) -> bool:
    with path.open("rb") as stream:
        return stream.read(2) == b"\x1f\x8b"


def _pair(record: Mapping[str, Any], fmt: Transcript) -> tuple[str, str, str]:
    chosen, rejected, prompt = record["chosen"], record["rejected"], record.get("prompt")
    if isinstance(chosen, str) and isinstance(rejected, str):
        if prompt is None:  # HH-RLHF: full transcripts sharing the dialogue
            prompt, chosen_text = fmt.split_transcript(chosen, "chosen")
            _, rejected_text = fmt.split_transcript(rejected, "rejected")
            return prompt, chosen_text, rejected_text
        return _prompt_text(prompt, fmt), chosen.strip(), rejected.strip()
    if isinstance(chosen, list) and isinstance(rejected, list):
        prompt_messages = [] if prompt is None else _messages(prompt, "prompt")
        prompt_text, chosen_text = fmt.split_messages(prompt_messages + _messages(chosen, "chosen"), "chosen")
        _, rejected_text = fmt.split_messages(prompt_messages + _messages(rejected, "rejected"), "rejected")
        return prompt_text, chosen_text, rejected_text
    raise RecordError("chosen", "chosen and rejected must both be strings or both be message lists")


def _ranking(record: Mapping[str, Any], fmt: Transcript) -> Comparison:
    responses = record["responses"]
    if not isinstance(responses, list) or len(responses) < 2 or not all(isinstance(r, str) for r in responses):
        raise RecordError("responses", "must be a list of at least two strings")
    ranking = record.get("ranking", list(range(len(responses))))
    if not isinstance(ranking, list) or sorted(ranking) != list(range(len(responses))):
        raise RecordError("ranking", f"must list each index 0..{len(responses) - 1} once, best first")
    prompt = _prompt_text(record["prompt"], fmt)
    return Comparison(prompt, tuple(responses[i].strip() for i in ranking))


def _prompt_text(prompt: Any, fmt: Transcript) -> str:
    if isinstance(prompt, str):
        return fmt.prompt_text(prompt)
    return fmt.prompt_text(fmt.render_turns(_messages(prompt, "prompt"), "prompt"))


def _messages(value: Any, field_name: str) -> list[Mapping[str, str]]:
    if not isinstance(value, list) or not all(isinstance(m, Mapping) for m in value):
        raise RecordError(field_name, "must be a list of {role, content} messages")
    return value


def _describe(error: Exception) -> str:
    if isinstance(error, InvalidField):
        return f"{error.field}: {error.message}"
    if isinstance(error, KeyError):
        return f"missing field {error.args[0]!r}"
    return str(error)
