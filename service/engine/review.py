"""The review buffer: recent prompts where the reward model is least to be trusted, for people to rank.

Opt-in (`RMSERVE_REVIEW_PROMPTS`, 0 = off), because it keeps prompt and response texts in
memory. A prompt enters when one of its responses raised a flag that questions the score (any
but `truncated`, so an ensemble's `high_disagreement`, once served, feeds it too) or scored at
least `EXTREME_Z` training standard deviations from the training mean; from then on its
responses are collected (up to `MAX_RESPONSES` distinct ones), so people get something to
compare. The least recently touched prompt leaves first. Exported as ranking records
`{"prompt", "responses"}`, which `rmserve train` reads once people have put the responses in
order.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rmserve.engine.flags import TRUNCATED

EXTREME_Z = 3.0
MAX_RESPONSES = 8


@dataclass
class ReviewGroup:
    responses: dict[str, tuple[float, list[str]]] = field(default_factory=dict)  # text -> (score, flags)

    def add(self, response: str, score: float, flags: list[str]) -> None:
        if response in self.responses or len(self.responses) < MAX_RESPONSES:
            self.responses[response] = (score, flags)

    def record(self, prompt: str) -> dict[str, Any]:
        """A ranking record, responses in the model's order (best first); people re-order them."""
        ordered = sorted(self.responses.items(), key=lambda entry: -entry[1][0])
        return {
            "prompt": prompt,
            "responses": [text for text, _ in ordered],
            "model_scores": [score for _, (score, _) in ordered],
            "flags": [flags for _, (_, flags) in ordered],
        }


class ReviewBuffer:
    """At most `capacity` prompts with their responses; thread-safe."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._groups: OrderedDict[str, ReviewGroup] = OrderedDict()
        self._lock = threading.Lock()

    def observe(
        self, prompts: Sequence[str], responses: Sequence[str], scores: np.ndarray, flags: Sequence[list[str]]
    ) -> None:
        """Keep a request's items whose prompt needs review (all [items], in request order)."""
        doubtful = np.abs(scores) >= EXTREME_Z  # [items]
        for index, item_flags in enumerate(flags):
            doubtful[index] |= any(flag != TRUNCATED for flag in item_flags)
        wanted = {prompt for prompt, doubt in zip(prompts, doubtful.tolist(), strict=True) if doubt}
        with self._lock:
            wanted |= {prompt for prompt in prompts if prompt in self._groups}
            if not wanted:
                return
            for prompt, response, score, item_flags in zip(prompts, responses, scores.tolist(), flags, strict=True):
                if prompt in wanted:
                    self._groups.setdefault(prompt, ReviewGroup()).add(response, score, item_flags)
                    self._groups.move_to_end(prompt)
            while len(self._groups) > self.capacity:
                self._groups.popitem(last=False)

    def records(self) -> list[dict[str, Any]]:
        """Ranking records of the prompts with at least two distinct responses, most recent first."""
        with self._lock:
            return [
                group.record(prompt) for prompt, group in reversed(self._groups.items()) if len(group.responses) >= 2
            ]
