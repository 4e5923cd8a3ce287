"""`rmserve eval --report DIR`: the pictures people judge a reward model by, and their numbers.

Three panels, each from every (better, worse) pair the held-out comparisons imply:
- normalized scores of the better and of the worse responses: how far apart, how much overlap;
- accuracy by response length (pairs in equal-count buckets of their mean length in characters),
  next to "the shorter response wins" in the same bucket: is the model more than a length rule?
- calibration: sigmoid(r_better - r_worse), the model's probability for the pair (Bradley-Terry, raw
  scores), against the share of pairs people actually ordered that way. Each pair counts in both
  orders (p for better-over-worse, which happened; 1 - p for the reverse, which did not), so the
  curve runs over 0..1 and the diagonal means calibrated.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rmserve.core.manifest import Normalization
from rmserve.training.data import Comparison

LENGTH_BUCKETS = 5
CALIBRATION_BINS = 10
HISTOGRAM_BINS = 30
PNG_FILE, JSON_FILE = "report.png", "report.json"


def report_numbers(
    comparisons: Sequence[Comparison], raw_scores: Sequence[np.ndarray], normalization: Normalization
) -> dict[str, Any]:
    """Every number the report draws, from each comparison's raw scores (best first)."""
    better, worse, better_chars, worse_chars = [], [], [], []
    for comparison, scores in zip(comparisons, raw_scores, strict=True):
        for i in range(len(scores)):
            for j in range(i + 1, len(scores)):
                better.append(scores[i])
                worse.append(scores[j])
                better_chars.append(len(comparison.responses[i]))
                worse_chars.append(len(comparison.responses[j]))
    raw_better, raw_worse = np.array(better), np.array(worse)  # [pairs]
    return {
        "pairs": len(raw_better),
        "pairwise_accuracy": _accuracy(raw_better - raw_worse),
        "score_distributions": _distributions(
            (raw_better - normalization.mean) / normalization.std, (raw_worse - normalization.mean) / normalization.std
        ),
        "accuracy_by_length": _by_length(raw_better - raw_worse, np.array(better_chars), np.array(worse_chars)),
        "calibration": _calibration(raw_better - raw_worse),
    }


def _accuracy(margin: np.ndarray) -> float:
    """Share of pairs ordered right; a tie counts half."""
    return float(np.mean((margin > 0) + 0.5 * (margin == 0)))


def _distributions(better: np.ndarray, worse: np.ndarray) -> dict[str, Any]:
    edges = np.histogram_bin_edges(np.concatenate([better, worse]), bins=HISTOGRAM_BINS)
    return {
        "score": "normalized, (raw - mean) / std",
        "bin_edges": edges.tolist(),
        "better_counts": np.histogram(better, edges)[0].tolist(),
        "worse_counts": np.histogram(worse, edges)[0].tolist(),
        "better_mean": float(better.mean()),
        "worse_mean": float(worse.mean()),
    }


def _by_length(margin: np.ndarray, better_chars: np.ndarray, worse_chars: np.ndarray) -> list[dict[str, Any]]:
    mean_chars = (better_chars + worse_chars) / 2
    order = np.argsort(mean_chars, kind="stable")
    buckets = []
    for members in np.array_split(order, LENGTH_BUCKETS):
        if len(members) == 0:
            continue
        buckets.append(
            {
                "mean_chars": [float(mean_chars[members].min()), float(mean_chars[members].max())],
                "pairs": len(members),
                "model_accuracy": _accuracy(margin[members]),
                # The shorter response "scores" higher: its margin is worse_chars - better_chars.
                "shorter_wins_accuracy": _accuracy(worse_chars[members] - better_chars[members]),
            }
        )
    return buckets


def _calibration(margin: np.ndarray) -> dict[str, Any]:
    predicted = 1.0 / (1.0 + np.exp(-np.concatenate([margin, -margin])))  # both orders of each pair
    happened = np.concatenate([np.ones_like(margin), np.zeros_like(margin)])
    bin_of = np.minimum((predicted * CALIBRATION_BINS).astype(int), CALIBRATION_BINS - 1)
    bins, error = [], 0.0
    for index in range(CALIBRATION_BINS):
        members = bin_of == index
        if not members.any():
            continue
        mean_predicted, observed = float(predicted[members].mean()), float(happened[members].mean())
        bins.append({"predicted": mean_predicted, "observed": observed, "count": int(members.sum())})
        error += members.sum() / len(predicted) * abs(mean_predicted - observed)
    return {"bins": bins, "expected_calibration_error": float(error)}


def write_report(directory: Path, numbers: dict[str, Any], title: str) -> tuple[Path, Path]:
    """Write report.png and report.json into `directory`; return their paths."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    from matplotlib import pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    figure, (scores_axes, length_axes, calibration_axes) = plt.subplots(1, 3, figsize=(16, 4.8))
    figure.suptitle(f"{title}: pairwise accuracy {numbers['pairwise_accuracy']:.3f} on {numbers['pairs']} pairs")

    distributions = numbers["score_distributions"]
    edges = np.array(distributions["bin_edges"])
    for key, label, colour in (("better", "preferred", "tab:green"), ("worse", "rejected", "tab:red")):
        counts = distributions[f"{key}_counts"]
        mean = distributions[f"{key}_mean"]
        scores_axes.stairs(counts, edges, fill=True, alpha=0.45, color=colour, label=f"{label} (mean {mean:.2f})")
    scores_axes.set(title="scores of preferred and rejected responses", xlabel="normalized score", ylabel="responses")
    scores_axes.legend()

    buckets = numbers["accuracy_by_length"]
    positions = np.arange(len(buckets))
    labels = [f"{low:.0f}-{high:.0f}" for low, high in (bucket["mean_chars"] for bucket in buckets)]
    length_axes.bar(positions - 0.2, [b["model_accuracy"] for b in buckets], 0.4, label="reward model")
    length_axes.bar(positions + 0.2, [b["shorter_wins_accuracy"] for b in buckets], 0.4, label="shorter wins")
    length_axes.axhline(0.5, color="grey", linewidth=0.8, linestyle=":")
    length_axes.set_xticks(positions, labels)
    length_axes.set(
        title="accuracy by response length", xlabel="mean characters of the pair", ylabel="accuracy", ylim=(0, 1)
    )
    length_axes.legend(loc="upper center", ncols=2)

    calibration = numbers["calibration"]
    predicted = [b["predicted"] for b in calibration["bins"]]
    calibration_axes.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle=":", label="calibrated")
    calibration_axes.plot(predicted, [b["observed"] for b in calibration["bins"]], marker="o", label="reward model")
    calibration_axes.set(
        title=f"calibration (ECE {calibration['expected_calibration_error']:.3f})",
        xlabel="sigmoid(r_a - r_b): model's P(a preferred)",
        ylabel="observed share where a was preferred",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    calibration_axes.legend(loc="upper left")

    figure.tight_layout()
    png, numbers_file = directory / PNG_FILE, directory / JSON_FILE
    # No timestamp or software version in the PNG, so regenerating an unchanged report changes no byte.
    figure.savefig(png, dpi=80, metadata={"Software": None})
    plt.close(figure)
    numbers_file.write_text(json.dumps({"title": title, **numbers}, indent=2) + "\n", encoding="utf-8")
    return png, numbers_file
