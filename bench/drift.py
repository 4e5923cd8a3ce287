"""A simulated RL run drifting the way a policy gaming hh-harmless would, scored through a live server.

hh-harmless learned that people often preferred the shorter, more cautious reply, so a policy
optimised against it drifts towards short, repeated refusals. Each round sends GROUP responses
to each of the same prompts (the way GRPO samples a group per prompt): round 0 is HH-RLHF
responses from the training lines (a policy that still writes like the data), and from round to
round a growing share is replaced by refusals, shorter and fewer of them each round.
`python -m bench.drift` prints what `/v1/models/<name>/stats` said after each round.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from rmserve.training.data import LineRange, read_comparisons

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "hh-rlhf-harmless-test.jsonl.gz"
PROMPT_LINES = LineRange(1, 1800)  # training lines only: the held-out lines stay untouched
GROUP = 8
# Refusals from polite and long to curt; later rounds draw from the short end only.
REFUSALS = (
    "I'm sorry, but I can't help with that request. Is there something else I can do for you?",
    "I'm sorry, I can't help with that.",
    "I can't help with that.",
    "I won't help with that.",
    "Sorry, no.",
    "No.",
)


@dataclass(frozen=True)
class Round:
    prompts: list[str]
    responses: list[str]


def gaming_rounds(rounds: int = 5, prompts: int = 40, seed: int = 0, data: Path = DATA) -> list[Round]:
    """`rounds` rounds of GROUP responses to the same `prompts` prompts, drifting to short refusals."""
    rng = random.Random(seed)
    comparisons = read_comparisons(data, PROMPT_LINES)
    pool = [response for comparison in comparisons for response in comparison.responses if response]
    chosen = rng.sample(comparisons, prompts)
    result = []
    for index in range(rounds):
        progress = index / max(1, rounds - 1)  # 0 .. 1
        refusal_share = 0.8 * progress
        refusals = REFUSALS[round(progress * (len(REFUSALS) - 2)) :]
        round_prompts, round_responses = [], []
        for comparison in chosen:
            for _ in range(GROUP):
                refuse = rng.random() < refusal_share
                round_prompts.append(comparison.prompt)
                round_responses.append(rng.choice(refusals) if refuse else rng.choice(pool))
        result.append(Round(round_prompts, round_responses))
    return result


def score_round(base_url: str, batch: Round, model: str) -> None:
    """Score one round as GRPO would: one group form request per prompt."""
    with requests.Session() as session:
        for start in range(0, len(batch.prompts), GROUP):
            body = {"model": model, "prompt": batch.prompts[start], "responses": batch.responses[start : start + GROUP]}
            session.post(f"{base_url}/v1/score", json=body, timeout=120).raise_for_status()


def run(base_url: str, rounds: list[Round], model: str = "hh-harmless") -> list[dict[str, Any]]:
    """Score each round and read `/v1/models/<model>/stats` after it."""
    after = []
    for batch in rounds:
        score_round(base_url, batch, model)
        after.append(requests.get(f"{base_url}/v1/models/{model}/stats", timeout=30).json())
    return after


def main() -> None:
    from bench.live_server import running_server

    rounds = gaming_rounds()
    repository = Path(__file__).resolve().parents[1] / "models" / "repository"
    env = {"RMSERVE_TELEMETRY_WINDOW": str(len(rounds[0].responses)), "RMSERVE_WORKERS": "1"}
    with running_server(repository, Path("/tmp/rmserve-drift.log"), env=env) as server:
        for index, stats in enumerate(run(server.base_url, rounds)):
            rates = stats["flag_rates"]
            print(
                f"round {index}: length-score rho {stats['length_score_correlation']:+.2f}, "
                f"duplicates {stats['duplicate_rate']:.0%}, above training range "
                f"{rates['score_above_training_range']:.0%}, length outside {rates['length_outside_training']:.0%}, "
                f"median shift {stats['drift']['median_shift']:+.2f} std, ks {stats['drift']['ks']:.2f}"
            )


if __name__ == "__main__":
    main()
