"""Per-item flags: what about an item says its score should not be taken at face value.

Each rule turns per-item signals into one bool column `[items]`; an item's flags are the names
of the columns true for it. A rule whose statistics the manifest lacks is not checked at all:
its flag is absent, never guessed. More signals (ensemble disagreement) plug in as more columns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from rmserve.core.manifest import TrainingStats

TRUNCATED = "truncated"
INJECTED_TURN = "injected_turn"  # the response writes turn markers of its own (the input format found them)
NO_PROMPT = "no_prompt"  # plain text with no prompt (a vLLM or Triton caller's): scored as a response alone
SCORE_ABOVE_TRAINING_RANGE = "score_above_training_range"
LENGTH_OUTSIDE_TRAINING = "length_outside_training"
HIGH_DISAGREEMENT = "high_disagreement"  # an ensemble's members disagree beyond their calibration p99 (engine.ensemble)
OUT_OF_DISTRIBUTION = "out_of_distribution"  # the pooled embedding lies farther from training's than their p99

FlagColumns = dict[str, np.ndarray]  # flag name -> bool [items]
# Flags that say what the request sent, not that the score is doubtful (the review buffer ignores them).
REQUEST_FLAGS = (TRUNCATED, NO_PROMPT)


@dataclass(frozen=True)
class FlagRules:
    """The cuts one model version flags by, from its manifest's training statistics (if any).

    The training range is the central 98% of the training responses (p01 to p99), so about 1% of
    in-distribution items cross each cut: a flag on one item is a hint, a rising *rate* is news.
    """

    stats: TrainingStats | None

    @property
    def names(self) -> tuple[str, ...]:
        """The flags this version checks, in the order answers list them."""
        if self.stats is None:
            return (TRUNCATED, INJECTED_TURN, NO_PROMPT)
        names = (TRUNCATED, INJECTED_TURN, NO_PROMPT, SCORE_ABOVE_TRAINING_RANGE, LENGTH_OUTSIDE_TRAINING)
        return names if self.stats.embedding is None else (*names, OUT_OF_DISTRIBUTION)

    def columns(
        self,
        raw_scores: np.ndarray,
        response_tokens: Sequence[int],
        truncated: Sequence[bool],
        injected_turn: Sequence[bool],
        no_prompt: Sequence[bool],
        ood_distances: np.ndarray | None = None,
    ) -> FlagColumns:
        """One bool column [items] per flag this version checks (`ood_distances` [items] with embedding stats)."""
        columns = {
            TRUNCATED: np.asarray(truncated, dtype=bool),
            INJECTED_TURN: np.asarray(injected_turn, dtype=bool),
            NO_PROMPT: np.asarray(no_prompt, dtype=bool),
        }
        if self.stats is not None:
            lengths = np.asarray(response_tokens)  # [items]
            columns[SCORE_ABOVE_TRAINING_RANGE] = raw_scores > self.stats.raw_score.p99
            columns[LENGTH_OUTSIDE_TRAINING] = (lengths < self.stats.response_tokens.p01) | (
                lengths > self.stats.response_tokens.p99
            )
            if self.stats.embedding is not None:
                if ood_distances is None:
                    raise ValueError("this version flags out_of_distribution: every item needs its embedding distance")
                columns[OUT_OF_DISTRIBUTION] = ood_distances > self.stats.embedding.distance.p99
        return columns


def item_flags(columns: Mapping[str, np.ndarray], items: int) -> list[list[str]]:
    """Per item, the names of the flags it raised, in column order."""
    flags: list[list[str]] = [[] for _ in range(items)]
    for name, column in columns.items():
        for index, raised in enumerate(column.tolist()):  # a list walk: cheaper than numpy on a request's few items
            if raised:
                flags[index].append(name)
    return flags
