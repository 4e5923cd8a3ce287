"""What the label store holds and hands out, as typed records, and how a task file's line becomes one."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from rmserve.errors import InvalidField

MIN_RESPONSES = 2
MAX_RESPONSES = 9  # the page's number keys 1-9 pick a response each
FILE_SOURCE = "file"
REVIEW_SOURCE = "review:"  # + the model's name


@dataclass(frozen=True)
class NewTask:
    """A prompt and 2-9 responses that `wanted` people should each order."""

    prompt: str
    responses: tuple[str, ...]
    wanted: int = 1
    source: str = FILE_SOURCE  # or REVIEW_SOURCE + model, for the review buffer
    priority: float = 0.0  # higher first: the review buffer's ensemble disagreement

    @property
    def key(self) -> str:
        """Its identity in the store: a file's task is its prompt and responses (adding a file twice adds nothing);
        a review group is its model and prompt, since the group grows as workers see more responses."""
        identity = (
            [self.source, self.prompt]
            if self.source.startswith(REVIEW_SOURCE)
            else [self.source, self.prompt, *self.responses]
        )
        return hashlib.sha256(json.dumps(identity, ensure_ascii=False).encode()).hexdigest()


@dataclass(frozen=True)
class Lease:
    """A task as one labeller sees it: responses in the random order shown to them."""

    task_id: int
    token: str  # proves the holder when the ordering comes back
    labeller: str
    prompt: str
    shown: tuple[int, ...]  # shown position -> index into the task's responses
    responses: tuple[str, ...]  # in the order shown
    expires: float  # epoch seconds


@dataclass(frozen=True)
class Ordering:
    """One labeller's finished ordering of a task: response indices best first, or a skip."""

    task_id: int
    labeller: str
    prompt: str
    responses: tuple[str, ...]  # in the task's own order
    ranking: tuple[int, ...] | None  # None: the labeller could not decide (skipped)
    shown: tuple[int, ...]

    def ranked_responses(self) -> list[str]:
        assert self.ranking is not None
        return [self.responses[index] for index in self.ranking]


@dataclass(frozen=True)
class Counts:
    """Tasks by state and orderings recorded, as the metrics and the page show them."""

    queued: int
    leased: int
    done: int
    orderings: int
    skips: int


def parse_task(record: Any, wanted: int) -> NewTask:
    """A `{"prompt", "responses": [...]}` object as a task, or InvalidField naming the field."""
    if not isinstance(record, dict):
        raise InvalidField("(line)", 'must be a JSON object {"prompt", "responses": [...]}')
    prompt = record.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidField("prompt", "must be a non-empty string")
    responses = record.get("responses")
    if responses is None:
        raise InvalidField("responses", f"is required: a list of {MIN_RESPONSES} to {MAX_RESPONSES} strings")
    if not isinstance(responses, list) or not MIN_RESPONSES <= len(responses) <= MAX_RESPONSES:
        count = len(responses) if isinstance(responses, list) else type(responses).__name__
        raise InvalidField("responses", f"must be a list of {MIN_RESPONSES} to {MAX_RESPONSES} strings, got {count}")
    for index, response in enumerate(responses):
        if not isinstance(response, str) or not response.strip():
            raise InvalidField(f"responses[{index}]", "must be a non-empty string")
    if len(set(responses)) < len(responses):
        raise InvalidField("responses", "holds the same response twice; people cannot order a response against itself")
    return NewTask(prompt, tuple(responses), wanted)
