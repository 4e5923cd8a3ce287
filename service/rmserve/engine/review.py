"""The review buffer: recent prompts where the reward model is least to be trusted, for people to rank.

Opt-in (`RMSERVE_REVIEW_PROMPTS`, 0 = off), because it keeps prompt and response texts in
memory. A prompt enters when one of its responses raised a flag that questions the score (any
but `truncated` and `no_prompt`, which describe the request, so an ensemble's `high_disagreement`
feeds it too) or scored at
least `EXTREME_Z` training standard deviations from the training mean; from then on its
responses are collected (up to `MAX_RESPONSES` distinct ones), so people get something to
compare. For an ensemble, a prompt's disagreement is the largest std across members of its
responses: the least disagreed-on prompt leaves first and records list the most disagreed-on
first. A single model has no disagreement: the least recently touched prompt leaves first and
the most recent comes first. Exported as ranking records `{"prompt", "responses"}`, which
`rmserve train` reads once people have put the responses in order.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rmserve.engine.flags import REQUEST_FLAGS

EXTREME_Z = 3.0
MAX_RESPONSES = 8


@dataclass
class ReviewGroup:
    # text -> (score, flags, std across an ensemble's members or None)
    responses: dict[str, tuple[float, list[str], float | None]] = field(default_factory=dict)

    def add(self, response: str, score: float, flags: list[str], disagreement: float | None) -> None:
        if response in self.responses or len(self.responses) < MAX_RESPONSES:
            self.responses[response] = (score, flags, disagreement)

    @property
    def disagreement(self) -> float:
        """The largest std across members of the group's responses (0 for a single model)."""
        return max((std or 0.0 for _, _, std in self.responses.values()), default=0.0)

    def record(self, prompt: str) -> dict[str, Any]:
        """A ranking record, responses in the model's order (best first); people re-order them."""
        ordered = sorted(self.responses.items(), key=lambda entry: -entry[1][0])
        record = {
            "prompt": prompt,
            "responses": [text for text, _ in ordered],
            "model_scores": [score for _, (score, _, _) in ordered],
            "flags": [flags for _, (_, flags, _) in ordered],
        }
        if any(std is not None for _, (_, _, std) in ordered):
            record["disagreement"] = [std for _, (_, _, std) in ordered]
        return record


class ReviewBuffer:
    """At most `capacity` prompts with their responses; thread-safe."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._groups: OrderedDict[str, ReviewGroup] = OrderedDict()
        self._lock = threading.Lock()
        # With labelling on, each group a request changed also goes here as its record (the label store's sink).
        self.on_group: Callable[[dict[str, Any]], None] | None = None

    def observe(
        self,
        prompts: Sequence[str],
        responses: Sequence[str],
        scores: np.ndarray,
        flags: Sequence[list[str]],
        disagreement: np.ndarray | None = None,
    ) -> None:
        """Keep a request's items whose prompt needs review (all [items], in request order; `disagreement`
        is an ensemble's std across members)."""
        doubtful = np.abs(scores) >= EXTREME_Z  # [items]
        for index, item_flags in enumerate(flags):
            doubtful[index] |= any(flag not in REQUEST_FLAGS for flag in item_flags)
        wanted = {prompt for prompt, doubt in zip(prompts, doubtful.tolist(), strict=True) if doubt}
        with self._lock:
            wanted |= {prompt for prompt in prompts if prompt in self._groups}
            if not wanted:
                return
            stds = [None] * len(prompts) if disagreement is None else disagreement.tolist()
            for prompt, response, score, item_flags, std in zip(
                prompts, responses, scores.tolist(), flags, stds, strict=True
            ):
                if prompt in wanted:
                    self._groups.setdefault(prompt, ReviewGroup()).add(response, score, item_flags, std)
                    self._groups.move_to_end(prompt)
            while len(self._groups) > self.capacity:
                # The least disagreed-on prompt leaves; among equals (always, for one model) the least recent.
                del self._groups[min(self._groups, key=lambda prompt: self._groups[prompt].disagreement)]
            on_group = self.on_group
            changed = [] if on_group is None else [self._groups[p].record(p) for p in wanted if p in self._groups]
        if on_group is not None:  # outside the lock: the sink takes its own
            for record in changed:
                if len(record["responses"]) >= 2:
                    on_group(record)

    def records(self) -> list[dict[str, Any]]:
        """Ranking records of the prompts with at least two distinct responses: the most disagreed-on first,
        then the most recent."""
        with self._lock:
            recent_first = [(prompt, group) for prompt, group in reversed(self._groups.items())]
            ranked = sorted(recent_first, key=lambda entry: -entry[1].disagreement)
            return [group.record(prompt) for prompt, group in ranked if len(group.responses) >= 2]
