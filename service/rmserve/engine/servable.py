"""What every served entry is, a single model or an ensemble: the one interface routes and `rmserve score` use.

A servable scores exchanges (with a reward choice, which only an ensemble offers), describes itself
(`metadata`: what the model list and the Open Inference Protocol's metadata say), names the batchers
it needs running (readiness), and answers its drift telemetry and review buffer. No caller tells the
kinds apart.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rmserve import metrics
from rmserve.core.conversation import Exchange
from rmserve.core.ensemble_spec import Combined, EnsembleSpec, Reward
from rmserve.core.formats import InputFormat
from rmserve.core.manifest import Normalization, TrainingStats
from rmserve.engine.batcher import Batcher
from rmserve.engine.flags import INJECTED_TURN, FlagColumns, item_flags
from rmserve.engine.review import ReviewBuffer
from rmserve.engine.telemetry import Telemetry, WindowSummary
from rmserve.errors import InferenceFailed, InvalidField, NotEnabled

REWARD_FIELD = "reward"  # how a reward choice is named: errors say it, every scoring route takes `?reward=`


@dataclass(frozen=True)
class Scored:
    """Per-item results of one scoring call, in request order."""

    raw_scores: np.ndarray  # [items]
    scores: np.ndarray  # [items], normalized
    truncated: list[bool]
    tokens: list[int]
    response_tokens: list[int]  # the whole response's tokens, before any truncation
    flag_columns: FlagColumns  # flag name -> bool [items], one per flag the version checks
    ood_distances: np.ndarray | None = None  # [items]: embedding distances, when the version measures them
    ensemble: Combined | None = None  # an ensemble's members' normalized scores and their combinations
    reward: Reward | None = None  # which combination an ensemble's `scores` are

    @property
    def injected_turn(self) -> list[bool]:
        """Per item, whether the response itself writes turn markers (scored whole, never split)."""
        return [bool(injected) for injected in self.flag_columns[INJECTED_TURN].tolist()]

    @property
    def flags(self) -> list[list[str]]:
        """Per item, the flags it raised."""
        return item_flags(self.flag_columns, len(self.tokens))


@dataclass(frozen=True)
class EnsembleInfo:
    spec: EnsembleSpec
    member_versions: dict[str, int]  # member -> the version it serves


@dataclass(frozen=True)
class ModelInfo:
    """What a servable says about itself; the fields a single model has and an ensemble lacks are None."""

    name: str
    version: int | None
    input_format: str  # transcript, pair or chat_template (an ensemble: its first member's, which reads text)
    evaluation: dict[str, Any]
    sha256: str | None = None
    max_length: int | None = None
    normalization: Normalization | None = None
    quantization: str | None = None
    training_stats: TrainingStats | None = None
    max_batch_tokens: int | None = None  # padded tokens per inference run, as served
    runtime: str | None = None  # what runs its graph (RMSERVE_RUNTIME)
    ensemble: EnsembleInfo | None = None


@dataclass(frozen=True)
class ServedStats:
    """The drift window of a servable in this process, with what it is compared against."""

    window: WindowSummary
    flags_checked: tuple[str, ...]
    training_stats: TrainingStats | None


class Servable(ABC):
    """A served model or ensemble, under its name in the repository."""

    name: str
    served_version: int | None  # None for an ensemble, which has no versions
    flag_names: tuple[str, ...]  # the flags its answers check, in the order they list them
    rewards: tuple[Reward, ...] = ()  # the reward choices it offers; a single model has one score
    telemetry: Telemetry | None = None  # its drift window (None: RMSERVE_TELEMETRY_WINDOW=0)
    review_buffer: ReviewBuffer | None = None  # opt-in, RMSERVE_REVIEW_PROMPTS

    @property
    @abstractmethod
    def input_format(self) -> InputFormat:
        """How request text is read (its layouts) into exchanges for this servable."""

    @property
    @abstractmethod
    def batchers(self) -> tuple[Batcher[Any], ...]:
        """The batchers it scores through; it is ready while every one of them runs."""

    @property
    @abstractmethod
    def max_lengths(self) -> tuple[int, ...]:
        """The tokens each of its models reads of an item (an ensemble: one per member), which memory is budgeted by."""

    @abstractmethod
    def score(self, exchanges: Sequence[Exchange], deadline: float, reward: Reward | None = None) -> Scored:
        """Score `exchanges` by `deadline` (monotonic s); `reward` picks an ensemble's combination."""

    @abstractmethod
    def metadata(self) -> ModelInfo: ...

    def reward_choice(self, requested: str | None) -> Reward | None:
        """`requested` as one of the rewards this servable offers (None: its default), or a 422 naming `reward`."""
        if requested is None:
            return None
        if not self.rewards:
            raise InvalidField(REWARD_FIELD, f"{self.name!r} is a single model, not an ensemble: it has one score")
        for known in self.rewards:
            if requested == known:
                return known
        raise InvalidField(REWARD_FIELD, f"must be one of {', '.join(self.rewards)}, got {requested!r}")

    def unhealthy(self) -> list[str]:
        """The models whose batcher it needs and is not running its loop (restarting after a crash, or ended)."""
        return [batcher.model for batcher in self.batchers if not batcher.healthy]

    def stats(self) -> ServedStats:
        if self.telemetry is None:
            raise NotEnabled("drift telemetry is off (RMSERVE_TELEMETRY_WINDOW=0)")
        return ServedStats(self.telemetry.summary(), self.flag_names, self.metadata().training_stats)

    def review(self) -> list[dict[str, Any]]:
        """The review buffer's ranking records, or NotEnabled while it is off."""
        if self.review_buffer is None:
            raise NotEnabled("the review buffer is off (RMSERVE_REVIEW_PROMPTS=0); it retains texts, so it is opt-in")
        return self.review_buffer.records()


def review_buffer(capacity: int) -> ReviewBuffer | None:
    """The opt-in review buffer of RMSERVE_REVIEW_PROMPTS prompts (0: off)."""
    return ReviewBuffer(capacity) if capacity else None


def require_finite(model: str, exchanges: Sequence[Exchange], scores: np.ndarray) -> None:
    """Every served score is a number: a non-finite one (normalization or a combination overflowing) fails the
    request as `inference_failed`, never `null` in a 200."""
    bad = np.flatnonzero(~np.isfinite(scores))
    if bad.size:
        metrics.ITEMS_FAILED.labels(model, "non_finite").inc(bad.size)
        first = int(bad[0])
        raise InferenceFailed(
            f"{model}'s score for {exchanges[first].field} is not a finite number ({scores[first]}): its "
            "normalization or combination overflows",
            field=exchanges[first].field,
        )
