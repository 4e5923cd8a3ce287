"""Synthetic text for the harness when no preference file is at hand (tests, a fresh machine)."""

from __future__ import annotations

import numpy as np

WORDS = ("the", "a", "reward", "model", "scores", "responses", "to", "prompts", "people", "ranked", "higher", "lower")


def synthetic_text(rng: np.random.Generator, low: int, high: int) -> str:
    """Between `low` and `high` words (exclusive) of reward-model vocabulary."""
    return " ".join(rng.choice(WORDS, int(rng.integers(low, high))))
