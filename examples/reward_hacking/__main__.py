"""`python -m examples.reward_hacking` (`make demo`): two GRPO runs against a live rmserve, the report and picture.

Offline on CPU: the policy is a tiny GPT-2 pre-trained here on the training lines of ../shared/data;
the reward models are the repository's (models/), served by `rmserve serve`.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

from examples.reward_hacking.alerts import RULES, first_firing
from examples.reward_hacking.plot import plot_report
from examples.reward_hacking.policy import PolicyConfig, build_policy
from examples.reward_hacking.prompts import DATA, TRAINING_LINES, read_corpus
from examples.reward_hacking.report import Report, RunReport, peak_step, versions, write_report
from examples.reward_hacking.repository import Roles, build_repository
from examples.reward_hacking.run import RewardKind, RunConfig, run_grpo

REWARDS: tuple[RewardKind, ...] = ("single", "conservative")
QUARTER = 4


def demo(out: Path, seeds: Sequence[int], run_config: RunConfig, policy_config: PolicyConfig) -> Report:
    """Both runs for every seed, from the same pre-trained policy per seed; writes report.json and report.png."""
    started = time.monotonic()
    roles = Roles()
    corpus = read_corpus()
    repository = build_repository(out / "repository", roles)
    runs = []
    for seed in seeds:
        policy, tokenizer, _ = build_policy(corpus.exchanges, policy_config, seed)
        for reward in REWARDS:
            run_started = time.monotonic()
            steps = run_grpo(
                reward, policy, tokenizer, corpus.questions, run_config, roles, seed, repository, out / "work"
            )
            firing = first_firing(steps)
            runs.append(
                RunReport(
                    reward=reward,
                    seed=seed,
                    alert_step=None if firing is None else firing.step,
                    alert_signals=[] if firing is None else firing.signals,
                    gold_peak_step=peak_step(steps),
                    wall_time_s=round(time.monotonic() - run_started, 1),
                    steps=steps,
                )
            )
            print(summary(runs[-1]), flush=True)
    config = {
        "policy": dataclasses.asdict(policy_config),
        "run": dataclasses.asdict(run_config),
        "roles": dataclasses.asdict(roles),
        "data": f"{DATA.name} lines {TRAINING_LINES}",
        "alert_rules": str(RULES.relative_to(RULES.parents[2])),
        "minutes_per_step": 1,
    }
    report = Report(config, list(seeds), versions(), round(time.monotonic() - started, 1), runs)
    write_report(report, out / "report.json")
    plot_report(report, out / "report.png")
    return report


def summary(run: RunReport) -> str:
    """One line: proxy and gold over the first and last quarter, the gold peak and the alert."""
    quarter = max(1, len(run.steps) // QUARTER)
    first, last = run.steps[:quarter], run.steps[-quarter:]

    def mean(records: Sequence[object], field: str) -> float:
        return statistics.fmean(getattr(record, field) for record in records)

    alert = "never" if run.alert_step is None else f"step {run.alert_step} ({', '.join(run.alert_signals)})"
    return (
        f"seed {run.seed} {run.reward:>12}: proxy {mean(first, 'proxy'):+.2f} -> {mean(last, 'proxy'):+.2f}, "
        f"gold {mean(first, 'gold'):+.2f} -> {mean(last, 'gold'):+.2f} (first -> last quarter); "
        f"gold peak step {run.gold_peak_step}; alert {alert}; {run.wall_time_s:.0f} s"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--out", type=Path, default=Path("runs/reward-hacking"), help="report, picture, scratch")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="one pair of runs per seed")
    parser.add_argument("--steps", type=int, default=RunConfig.steps, help="GRPO steps per run")
    parser.add_argument("--pretrain-steps", type=int, default=PolicyConfig.pretrain_steps)
    args = parser.parse_args(argv)
    report = demo(
        args.out,
        args.seeds,
        RunConfig(steps=args.steps),
        PolicyConfig(pretrain_steps=args.pretrain_steps),
    )
    print(f"wrote {args.out / 'report.json'} and {args.out / 'report.png'} in {report.wall_time_s:.0f} s")


if __name__ == "__main__":
    main()
