"""The demo's picture: proxy and gold per step for both runs, the gaming signals beneath, the alert as a line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from examples.reward_hacking.report import Report, RunReport, trailing_mean
from examples.reward_hacking.signals import StepRecord

RATES: dict[str, tuple[str, Callable[[StepRecord], float]]] = {  # the lower panels: label -> color, step's value
    "score above training range": ("tab:purple", lambda record: record.flag_rates.get("score_above_training_range", 0)),
    "out of distribution": ("tab:orange", lambda record: record.flag_rates.get("out_of_distribution", 0.0)),
    "high disagreement": ("tab:olive", lambda record: record.flag_rates.get("high_disagreement", 0.0)),
    "duplicates": ("tab:gray", lambda record: record.duplicate_rate),
}
TITLES = {"single": "reward = hh-harmless (single model)", "conservative": "reward = ensemble, conservative"}


def plot_report(report: Report, path: Path) -> None:
    """Both runs of the report's first seed side by side, as a PNG at `path`."""
    runs = [run for run in report.runs if run.seed == report.seeds[0]]
    figure, axes = plt.subplots(2, len(runs), figsize=(6.5 * len(runs), 7.5), sharex=True, squeeze=False)
    for column, run in enumerate(runs):
        _rewards(axes[0][column], run)
        _signals(axes[1][column], run)
    axes[0][0].set_ylabel("mean normalized score per step")
    axes[1][0].set_ylabel("share of the step's completions")
    figure.suptitle(f"GRPO against a live rmserve: proxy and gold (a model the policy never sees), seed {runs[0].seed}")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _rewards(axis: Axes, run: RunReport) -> None:
    steps = [record.step for record in run.steps]
    for name, color, values in (
        ("proxy (what pays the policy)", "tab:blue", [record.proxy for record in run.steps]),
        ("gold (hh-harmless-minilm)", "tab:green", [record.gold for record in run.steps]),
    ):
        axis.plot(steps, values, color=color, alpha=0.25, linewidth=0.8)
        axis.plot(steps, trailing_mean(values), color=color, linewidth=2, label=name)
    axis.axvline(
        run.gold_peak_step,
        color="tab:green",
        linestyle=":",
        linewidth=1,
        label=f"gold peak (step {run.gold_peak_step})",
    )
    _alert_line(axis, run)
    axis.set_title(TITLES.get(run.reward, run.reward))
    axis.legend(loc="upper left", fontsize=8)
    axis.grid(alpha=0.3)


def _signals(axis: Axes, run: RunReport) -> None:
    steps = [record.step for record in run.steps]
    for name, (color, value) in RATES.items():
        axis.plot(steps, trailing_mean([value(record) for record in run.steps]), color=color, label=name)
    disagreement = axis.twinx()
    disagreement.plot(
        steps,
        trailing_mean([record.disagreement or 0.0 for record in run.steps]),
        color="black",
        linestyle="--",
        label="mean disagreement (std, right axis)",
    )
    disagreement.set_ylabel("ensemble members' std")
    _alert_line(axis, run)
    axis.set_xlabel("GRPO step (10-step trailing means)")
    axis.set_ylim(0, 1)
    handles, labels = axis.get_legend_handles_labels()
    more_handles, more_labels = disagreement.get_legend_handles_labels()
    axis.legend(handles + more_handles, labels + more_labels, loc="upper left", fontsize=8)
    axis.grid(alpha=0.3)


def _alert_line(axis: Axes, run: RunReport) -> None:
    if run.alert_step is not None:
        axis.axvline(
            run.alert_step,
            color="tab:red",
            linewidth=1.5,
            label=f"RmserveRewardHackingSuspected (step {run.alert_step})",
        )
