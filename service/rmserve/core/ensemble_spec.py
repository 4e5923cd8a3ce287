"""An ensemble: a repository entry `<repository>/<name>/ensemble.json` naming member models.

Served like a model: every member scores every item (each through its own batcher), and the
answer carries, per item, the members' normalized scores combined:

    mean          the members' mean
    std           their standard deviation (population, ddof=0): how much they disagree
    conservative  mean - k * std (Coste et al. 2023, uncertainty-weighted optimisation)
    min           the worst case over members

`reward` says which of them single-number protocols (`/get_reward`, `/classify`, `/v2`) return
and `/v1/score` calls `scores`. Members are compared on their normalized scale (each member's
training responses have mean 0 and std 1), so no member dominates by the size of its raw scores.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from rmserve.core.manifest import MODEL_NAME_PATTERN, Quantiles

ENSEMBLE_FILE = "ensemble.json"
Reward = Literal["mean", "conservative", "min"]
REWARDS: tuple[Reward, ...] = ("mean", "conservative", "min")

MemberName = Annotated[str, StringConstraints(pattern=MODEL_NAME_PATTERN)]


class EnsembleSpec(BaseModel):
    """What `ensemble.json` holds; written by `rmserve ensemble`, read by the server.

    Unknown fields are refused: a misspelt `rewrad` must not leave the ensemble serving another reward.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    members: list[MemberName] = Field(min_length=2, description="model names in the same repository")
    k: float = Field(default=1.0, ge=0.0, allow_inf_nan=False, description="conservative = mean - k * std")
    reward: Reward = Field(default="conservative", description="what single-number protocols return")
    # std across members on calibration responses: its p99 is the `high_disagreement` cut.
    disagreement: Quantiles | None = None
    calibration: str | None = None  # the responses `disagreement` was measured on
    evaluation: dict[str, Any] = Field(default_factory=dict)  # held-out accuracy of members and combinations
    created: str | None = None

    @field_validator("members")
    @classmethod
    def _distinct(cls, members: list[str]) -> list[str]:
        if len(set(members)) != len(members):
            raise ValueError(f"members are not distinct: {members}")
        return members

    @classmethod
    def read(cls, entry_dir: Path) -> EnsembleSpec:
        return cls.model_validate(json.loads((entry_dir / ENSEMBLE_FILE).read_text(encoding="utf-8")))

    def write(self, entry_dir: Path) -> None:
        text = json.dumps(self.model_dump(mode="json", exclude_none=True), indent=2) + "\n"
        (entry_dir / ENSEMBLE_FILE).write_text(text, encoding="utf-8")


@dataclass(frozen=True)
class Combined:
    """The members' normalized scores {member: [items]} and their per-item combinations, each [items]."""

    members: dict[str, np.ndarray]
    mean: np.ndarray
    std: np.ndarray
    conservative: np.ndarray
    min: np.ndarray

    def reward(self, which: Reward) -> np.ndarray:
        return {"mean": self.mean, "conservative": self.conservative, "min": self.min}[which]

    def combinations(self) -> dict[str, np.ndarray]:
        """mean, std, conservative and min by name, each [items]."""
        return {"mean": self.mean, "std": self.std, "conservative": self.conservative, "min": self.min}


def combine(member_scores: Mapping[str, np.ndarray], k: float) -> Combined:
    """Combine normalized scores {member: [items]} into mean, std, conservative and min [items]."""
    members = {name: np.asarray(scores, dtype=np.float64) for name, scores in member_scores.items()}
    stacked = np.stack(list(members.values()))  # [members, items]
    mean, std = stacked.mean(axis=0), stacked.std(axis=0)
    return Combined(members=members, mean=mean, std=std, conservative=mean - k * std, min=stacked.min(axis=0))


def is_ensemble(entry_dir: Path) -> bool:
    return (entry_dir / ENSEMBLE_FILE).is_file()
