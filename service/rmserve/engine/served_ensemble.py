"""An ensemble served like a model: every member scores every item through its own batcher.

One request is laid out once: the protocols read its text with the first member's input
format (its text layouts, e.g. its own transcript), and each member then encodes the same
exchanges in its own input format. Every member's items are queued before the ensemble waits
on any, so members score concurrently; when one member fails or the deadline passes, the
request fails and what is still queued in every member is cancelled.

The answer (`Scored`) for an ensemble:
    scores, raw_scores  the ensemble's reward (`mean`, `conservative` or `min` of the members'
                        normalized scores); an ensemble has no raw scale of its own
    tokens              the most tokens any member read for the item
    response_tokens     the most response tokens any member's tokenizer counted
    truncated           whether any member cut the item
    flag_columns        the union of the members' flags, plus `high_disagreement` (the members' std
                        above the calibration p99 in `ensemble.json`; absent without it)
    ensemble            the members' normalized scores and mean, std, conservative, min
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rmserve.config import Settings
from rmserve.core.conversation import Exchange
from rmserve.core.ensemble_spec import REWARDS, EnsembleSpec, Reward, combine
from rmserve.core.formats import InputFormat
from rmserve.core.manifest import Normalization
from rmserve.engine.batcher import Batcher
from rmserve.engine.flags import HIGH_DISAGREEMENT, FlagColumns
from rmserve.engine.servable import EnsembleInfo, ModelInfo, Scored, Servable, require_finite, review_buffer
from rmserve.engine.served_model import Pending, ServedModel, watch
from rmserve.engine.telemetry import Telemetry

# An ensemble's reward is already on the members' normalized scale: its window reads it as is.
IDENTITY = Normalization(mean=0.0, std=1.0)


class ServedEnsemble(Servable):
    """Members (loaded models, each with its own batcher) combined per item as `ensemble.json` says."""

    served_version = None  # an ensemble has no versions; its members' are in /v1/models
    rewards = REWARDS

    def __init__(self, name: str, spec: EnsembleSpec, members: Sequence[ServedModel], settings: Settings):
        self.name = name
        self.spec = spec
        self.members = list(members)
        member_flags = dict.fromkeys(flag for member in self.members for flag in member.flag_names)
        if spec.disagreement is not None:
            member_flags[HIGH_DISAGREEMENT] = None
        self.flag_names = tuple(member_flags)
        window = settings.telemetry_window
        self.telemetry = Telemetry(name, window, self.flag_names, IDENTITY, None, disagreement=True) if window else None
        self.review_buffer = review_buffer(settings.review_prompts)

    @property
    def input_format(self) -> InputFormat:
        """How requests are read: the first member's format parses text layouts; members encode their own way."""
        return self.members[0].input_format

    @property
    def batchers(self) -> tuple[Batcher[Any], ...]:
        """Its members': an ensemble has no batcher of its own."""
        return tuple(member.batcher for member in self.members)

    @property
    def max_lengths(self) -> tuple[int, ...]:
        return tuple(length for member in self.members for length in member.max_lengths)

    def metadata(self) -> ModelInfo:
        versions = {member.name: member.version.manifest.version for member in self.members}
        return ModelInfo(
            name=self.name,
            version=None,
            input_format=self.input_format.style,
            evaluation=self.spec.evaluation,
            ensemble=EnsembleInfo(self.spec, versions),
        )

    def score(self, exchanges: Sequence[Exchange], deadline: float, reward: Reward | None = None) -> Scored:
        """Every member's scores, combined; `scores` is `reward` (default: the spec's)."""
        pending: list[tuple[ServedModel, Pending]] = []
        try:
            for member in self.members:
                pending.append((member, member.submit(exchanges, deadline)))
            results = [member.collect(queued, deadline) for member, queued in pending]
        except BaseException:
            for member, queued in pending:
                member.cancel(queued)
            raise
        combined = combine(
            {member.name: result.scores for member, result in zip(self.members, results, strict=True)}, self.spec.k
        )
        for values in combined.combinations().values():
            require_finite(self.name, exchanges, values)
        reward = reward or self.spec.reward
        values = combined.reward(reward)
        scored = Scored(
            raw_scores=values,
            scores=values,
            truncated=np.any([result.truncated for result in results], axis=0).tolist(),
            tokens=np.max([result.tokens for result in results], axis=0).tolist(),
            response_tokens=np.max([result.response_tokens for result in results], axis=0).tolist(),
            flag_columns=self._flag_columns(results, combined.std),
            ensemble=combined,
            reward=reward,
        )
        watch(self.name, self.telemetry, self.review_buffer, exchanges, scored)
        return scored

    def _flag_columns(self, results: Sequence[Scored], std: np.ndarray) -> FlagColumns:
        """Each flag raised by any member, and `high_disagreement` where the members' std passes its cut."""
        columns = {name: np.zeros(len(std), dtype=bool) for name in self.flag_names}
        for result in results:
            for name, column in result.flag_columns.items():
                columns[name] |= column
        if self.spec.disagreement is not None:
            columns[HIGH_DISAGREEMENT] = std > self.spec.disagreement.p99
        return columns
