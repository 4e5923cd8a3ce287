"""Simulated RL runs drifting the way a policy gaming the served model would, scored through a live server.

Each round sends GROUP responses to each of the same prompts (the way GRPO samples a group per
prompt): round 0 is HH-RLHF responses from the training lines (a policy that still writes like
the data), and from round to round a growing share is replaced by what a gaming policy writes.
Two scenarios, one per kind of model:

- `hh-harmless` learned that people often preferred the shorter, more cautious reply, so a policy
  optimised against it drifts towards short refusals, shorter and fewer of them each round;
- `length-loving` (bench/length_model.py) pays for length, as helpfulness reward models do, so a
  policy drifts towards answers padded with filler sentences, longer each round, and gives the same
  padded answer to more and more of a prompt's samples.

`python -m bench.drift [scenario]` prints what `/v1/models/<name>/stats` said after each round.
"""

from __future__ import annotations

import argparse
import random
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from bench.length_model import write_length_loving_version
from bench.live_server import ROOT
from bench.texts import prompt_of
from rmserve.training.data import LineRange, read_comparisons

DATA = ROOT.parent / "shared" / "data" / "hh-rlhf-harmless-test.jsonl.gz"
REPOSITORY = ROOT / "models"
PROMPT_LINES = LineRange(1, 1800)  # training lines only: the held-out lines stay untouched
GROUP = 8
GAMED_SHARE = 0.8  # of the last round's responses; rising linearly from 0 in round 0
# Refusals from polite and long to curt; later rounds draw from the short end only.
REFUSALS = (
    "I'm sorry, but I can't help with that request. Is there something else I can do for you?",
    "I'm sorry, I can't help with that.",
    "I can't help with that.",
    "I won't help with that.",
    "Sorry, no.",
    "No.",
)
# What a policy pads an answer with once length pays: polite filler, said again and again.
FILLER = (
    "I hope this helps!",
    "Let me know if you have any other questions.",
    "Here is a little more detail, in case it is useful.",
    "It is a great question, and I am happy to go into it further.",
    "To summarize what I said above, the answer is as described.",
)
MAX_FILLER = 40  # filler sentences at most, in the last round

# A gaming policy: one sample's gamed response at `progress` (0 .. 1), given the pool of natural
# responses and the gamed responses it already gave this prompt in this round.
Policy = Callable[[random.Random, float, Sequence[str], Sequence[str]], str]


def short_refusal(rng: random.Random, progress: float, pool: Sequence[str], earlier: Sequence[str]) -> str:
    """A refusal, from the shorter end of REFUSALS as the run goes on."""
    return rng.choice(REFUSALS[round(progress * (len(REFUSALS) - 2)) :])


def padded_answer(rng: random.Random, progress: float, pool: Sequence[str], earlier: Sequence[str]) -> str:
    """A natural answer padded with repeated filler, more of it each round; or, with probability
    sqrt(progress), an answer already given to this prompt (the policy collapsing onto what pays)."""
    if earlier and rng.random() < progress**0.5:
        return rng.choice(earlier)
    filler = [rng.choice(FILLER) for _ in range(rng.randint(1, 1 + round(progress * MAX_FILLER)))]
    return " ".join([rng.choice(pool), *filler])


def committed_repository(scratch: Path) -> Path:
    """models, where hh-harmless is committed: nothing to build."""
    return REPOSITORY


def length_loving_repository(scratch: Path) -> Path:
    """A repository in `scratch` holding the length-loving model, its statistics from the training lines."""
    write_length_loving_version(scratch, DATA, PROMPT_LINES)
    return scratch


@dataclass(frozen=True)
class Scenario:
    model: str  # the served model the policy games
    policy: Policy
    repository: Callable[[Path], Path]  # where the model is served from, given a scratch directory


HARMLESS = Scenario("hh-harmless", short_refusal, committed_repository)
LENGTH_LOVING = Scenario("length-loving", padded_answer, length_loving_repository)
SCENARIOS = {scenario.model: scenario for scenario in (HARMLESS, LENGTH_LOVING)}


@dataclass(frozen=True)
class Round:
    prompts: list[str]
    responses: list[str]


def gaming_rounds(policy: Policy, rounds: int = 5, prompts: int = 40, seed: int = 0, data: Path = DATA) -> list[Round]:
    """`rounds` rounds of GROUP responses to the same `prompts` prompts, a growing share of them gamed."""
    rng = random.Random(seed)
    comparisons = read_comparisons(data, PROMPT_LINES)
    pool = [response for comparison in comparisons for response in comparison.responses if response]
    chosen = rng.sample(comparisons, prompts)
    result = []
    for index in range(rounds):
        progress = index / max(1, rounds - 1)  # 0 .. 1
        round_prompts, round_responses = [], []
        for comparison in chosen:
            gamed: list[str] = []
            for _ in range(GROUP):
                if rng.random() < GAMED_SHARE * progress:
                    gamed.append(policy(rng, progress, pool, gamed))
                    response = gamed[-1]
                else:
                    response = rng.choice(pool)
                round_prompts.append(prompt_of(comparison))
                round_responses.append(response)
        result.append(Round(round_prompts, round_responses))
    return result


def score_round(base_url: str, batch: Round, model: str) -> None:
    """Score one round as GRPO would: one group form request per prompt."""
    with requests.Session() as session:
        for start in range(0, len(batch.prompts), GROUP):
            body = {"model": model, "prompt": batch.prompts[start], "responses": batch.responses[start : start + GROUP]}
            session.post(f"{base_url}/v1/score", json=body, timeout=120).raise_for_status()


def run(base_url: str, rounds: list[Round], model: str) -> list[dict[str, Any]]:
    """Score each round and read `/v1/models/<model>/stats` after it."""
    after = []
    for batch in rounds:
        score_round(base_url, batch, model)
        after.append(requests.get(f"{base_url}/v1/models/{model}/stats", timeout=30).json())
    return after


def server_env(scenario: Scenario, rounds: list[Round]) -> dict[str, str]:
    """One worker serving the scenario's model, its telemetry window holding exactly one round."""
    return {
        "RMSERVE_MODELS": scenario.model,
        "RMSERVE_WORKERS": "1",
        "RMSERVE_TELEMETRY_WINDOW": str(len(rounds[0].responses)),
    }


def main(argv: list[str] | None = None) -> None:
    from bench.live_server import running_server

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", nargs="?", choices=SCENARIOS, help="the scenario to run (default: each)")
    chosen = parser.parse_args(argv).scenario
    for name in [chosen] if chosen else SCENARIOS:
        scenario = SCENARIOS[name]
        rounds = gaming_rounds(scenario.policy)
        with tempfile.TemporaryDirectory(prefix="rmserve-drift-") as scratch:
            repository = scenario.repository(Path(scratch))
            log = Path(scratch) / "rmserve.log"
            with running_server(repository, log, env=server_env(scenario, rounds)) as server:
                print(f"{name}:")
                for index, stats in enumerate(run(server.base_url, rounds, scenario.model)):
                    rates = stats["flag_rates"]
                    print(
                        f"round {index}: length-score rho {stats['length_score_correlation']:+.2f}, "
                        f"duplicates {stats['duplicate_rate']:.0%}, above training range "
                        f"{rates['score_above_training_range']:.0%}, length outside "
                        f"{rates['length_outside_training']:.0%}, median shift "
                        f"{stats['drift']['median_shift']:+.2f} std, ks {stats['drift']['ks']:.2f}"
                    )


if __name__ == "__main__":
    main()
