"""Preference data in the formats users have, read once into one shape: a prompt's turns and its responses, best first.

Formats (one JSON object per line, plain or gzipped JSONL):

- HH-RLHF transcripts `{"chosen": "\\n\\nHuman: ...\\n\\nAssistant: ...", "rejected": ...}`;
  the prompt is the dialogue up to the last `"\\n\\nAssistant:"`, the response all that follows.
- `{"prompt": str, "chosen": str, "rejected": str}`.
- TRL conversational: `{"prompt": [messages], "chosen": [messages], "rejected": [messages]}`, or
  `{"chosen": [messages], "rejected": [messages]}` with full conversations.
- Rankings `{"prompt": str | [messages], "responses": [best, ..., worst]}`, or with an explicit
  `"ranking": [index, ...]` (best first) over `responses` in any order.

Pairs may carry a numeric `"margin"` (how much better `chosen` is), used by the Bradley–Terry loss.
Text becomes turns here, once, the way the server reads a request (`rmserve.core.layouts`): a prompt
string as `/v1/score` reads one (its text kept beside its turns), messages as they are, every text as
written (an HH transcript's prompt ends with the space after its last `Assistant:`, so prompt +
response is the transcript). Training, export and eval then lay the exchanges out with the model's
input format, the call serving makes (`rmserve.core.formats.InputFormat.encode`), which alone
decides what whitespace a model reads.
"""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rmserve.core.conversation import ROLES, Exchange, Turn
from rmserve.core.layouts import LAYOUTS, Layout, prompt_turns
from rmserve.core.transcript import Transcript
from rmserve.errors import InvalidField
from rmserve.usage import UsageError

HH_RLHF = Transcript()  # the layout of HH-RLHF's full transcripts


class DataError(UsageError, ValueError):
    """A line of a preference file that cannot be read; the message names file and line (no traceback)."""


class RecordError(ValueError):
    """A field of one record is wrong (becomes a DataError naming file and line)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")


@dataclass(frozen=True)
class Comparison:
    """One prompt and K >= 2 responses ordered best first (K = 2 is a preference pair)."""

    prompt: tuple[Turn, ...]  # the turns before the responses
    responses: tuple[str, ...]
    margin: float | None = None
    prompt_text: str | None = None  # the prompt as the file wrote it, when it came as text

    def exchanges(self) -> list[Exchange]:
        """Each response with the prompt, as the server builds them from a request."""
        return [Exchange(self.prompt, response, "prompt", prompt_text=self.prompt_text) for response in self.responses]


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
    path: Path, lines: LineRange | None = None, layouts: Sequence[Layout] = LAYOUTS
) -> list[Comparison]:
    """Read a preference file (any supported format, `.gz` or plain), optionally only some lines.

    `layouts` are the chat layouts prompt texts may be written in: a model's own (`InputFormat.layouts`).
    """
    comparisons = []
    for line_number, record in _records(path):
        if lines is not None and line_number not in lines:
            continue
        try:
            comparisons.append(parse_record(record, layouts))
        except (InvalidField, TypeError, KeyError, ValueError) as error:  # InvalidField: from the layouts
            raise DataError(f"{path}:{line_number}: {_describe(error)}") from error
    if not comparisons:
        raise DataError(f"{path}: no comparisons in lines {lines or 'all'}")
    return comparisons


def parse_record(record: Any, layouts: Sequence[Layout] = LAYOUTS) -> Comparison:
    """One JSON object in any supported format -> a Comparison."""
    if not isinstance(record, Mapping):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    if "responses" in record:
        return _ranking(record, layouts)
    if "chosen" in record and "rejected" in record:
        margin = record.get("margin")
        if margin is not None and not isinstance(margin, int | float):
            raise RecordError("margin", "must be a number")
        return _pair(record, layouts, None if margin is None else float(margin))
    raise ValueError(f"unknown format: keys {sorted(record)}; expected chosen/rejected or prompt/responses")


def split_dev(
    comparisons: Sequence[Comparison], fraction: float, seed: int
) -> tuple[list[Comparison], list[Comparison]]:
    """Hold out a seeded random `fraction` of the training comparisons for early stopping, at least one."""
    order = list(range(len(comparisons)))
    random.Random(seed).shuffle(order)
    # A review export of a few records still gets a dev comparison: early stopping and the blend need one.
    dev_size = max(1, round(len(comparisons) * fraction))
    dev = set(order[:dev_size])
    train = [c for i, c in enumerate(comparisons) if i not in dev]
    return train, [c for i, c in enumerate(comparisons) if i in dev]


def pairs(comparisons: Sequence[Comparison]) -> list[tuple[str, str]]:
    """Every (better, worse) pair of responses implied by the comparisons' orderings."""
    return [
        (c.responses[i], c.responses[j])
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


def _pair(record: Mapping[str, Any], layouts: Sequence[Layout], margin: float | None) -> Comparison:
    chosen, rejected, prompt = record["chosen"], record["rejected"], record.get("prompt")
    if isinstance(chosen, str) and isinstance(rejected, str):
        if prompt is None:  # HH-RLHF: full transcripts sharing the dialogue
            dialogue, better = HH_RLHF.split_transcript(chosen, "chosen")
            _, worse = HH_RLHF.split_transcript(rejected, "rejected")
            return Comparison(prompt_turns(dialogue, "chosen", layouts), (better, worse), margin, dialogue)
        turns, prompt_text = _prompt(prompt, layouts)
        return Comparison(turns, (chosen, rejected), margin, prompt_text)
    if isinstance(chosen, list) and isinstance(rejected, list):
        opening = () if prompt is None else _turns(prompt, "prompt")
        better, better_turns = _response(_turns(chosen, "chosen"), "chosen")
        worse, _ = _response(_turns(rejected, "rejected"), "rejected")
        return Comparison(opening + better_turns, (better, worse), margin)
    raise RecordError("chosen", "chosen and rejected must both be strings or both be message lists")


def _ranking(record: Mapping[str, Any], layouts: Sequence[Layout]) -> Comparison:
    responses = record["responses"]
    if not isinstance(responses, list) or len(responses) < 2 or not all(isinstance(r, str) for r in responses):
        raise RecordError("responses", "must be a list of at least two strings")
    ranking = record.get("ranking", list(range(len(responses))))
    if not isinstance(ranking, list) or sorted(ranking) != list(range(len(responses))):
        raise RecordError("ranking", f"must list each index 0..{len(responses) - 1} once, best first")
    turns, prompt_text = _prompt(record["prompt"], layouts)
    return Comparison(turns, tuple(responses[i] for i in ranking), prompt_text=prompt_text)


def _prompt(prompt: Any, layouts: Sequence[Layout]) -> tuple[tuple[Turn, ...], str | None]:
    """A prompt string as `/v1/score` reads one (its text kept), or a message list as its turns."""
    if isinstance(prompt, str):
        return prompt_turns(prompt, "prompt", layouts), prompt
    return _turns(prompt, "prompt"), None


def _turns(value: Any, field: str) -> tuple[Turn, ...]:
    """A list of {role, content} messages as turns, as `/v1/score` reads `messages`."""
    if not isinstance(value, list):
        raise RecordError(field, "must be a list of {role, content} messages")
    turns = []
    for index, message in enumerate(value):
        if not isinstance(message, Mapping):
            raise RecordError(f"{field}[{index}]", "must be a {role, content} message")
        if message.get("role") not in ROLES:
            raise RecordError(
                f"{field}[{index}].role", f"must be one of {', '.join(ROLES)}, got {message.get('role')!r}"
            )
        if not isinstance(message.get("content"), str):
            raise RecordError(f"{field}[{index}].content", "must be a string")
        turns.append(Turn(message["role"], message["content"]))
    return tuple(turns)


def _response(turns: tuple[Turn, ...], field: str) -> tuple[str, tuple[Turn, ...]]:
    """(The last message, the assistant's response to score; the turns before it)."""
    if not turns:
        raise RecordError(field, "must hold at least one message")
    if turns[-1].role != "assistant":
        raise RecordError(f"{field}[{len(turns) - 1}].role", "the last message must be the assistant's response")
    return turns[-1].content, turns[:-1]


def _describe(error: Exception) -> str:
    if isinstance(error, InvalidField):
        return f"{error.field}: {error.message}"
    if isinstance(error, KeyError):
        return f"missing field {error.args[0]!r}"
    return str(error)
