"""Text for the harness: a comparison's prompt as a client sends it, or synthetic text when no preference file is
at hand (tests, a fresh machine)."""

from __future__ import annotations

import numpy as np

from rmserve.training.data import HH_RLHF, Comparison

WORDS = ("the", "a", "reward", "model", "scores", "responses", "to", "prompts", "people", "ranked", "higher", "lower")


def prompt_of(comparison: Comparison) -> str:
    """The prompt as the file wrote it; a prompt that came as messages, as an HH-RLHF transcript."""
    return comparison.prompt_text if comparison.prompt_text is not None else HH_RLHF.render_prompt(comparison.prompt)


def synthetic_text(rng: np.random.Generator, low: int, high: int) -> str:
    """Between `low` and `high` words (exclusive) of reward-model vocabulary."""
    return " ".join(rng.choice(WORDS, int(rng.integers(low, high))))
