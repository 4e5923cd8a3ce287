"""Choosing an ensemble on its members' shared dev split, then testing the choice against the bag of words.

    python -m rmserve.training.selection --members hh-harmless hh-harmless-minilm hh-harmless-seed1

prints, on the dev split every member left out of training (their manifests must record the same
training data, lines, dev fraction and dev seed: `rmserve train --dev-seed`), the pairwise accuracy
of each member and of mean, min and conservative (for each k of `K_GRID`) over every subset of two
or more members. The best dev row is the choice. With `--held-out FILE [--held-out-lines A-B] --k K`
it prints instead, for the members as given, the held-out accuracy of each member and of mean,
conservative and min, each beside its paired-bootstrap difference to the bag-of-words baseline
trained on the members' training lines: run it once, for the final choice.
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rmserve.config import DEFAULT_REPOSITORY
from rmserve.core.ensemble_spec import REWARDS, combine
from rmserve.engine.version import ModelVersion
from rmserve.training.baselines import BagOfWords
from rmserve.training.console import line_range, print_table
from rmserve.training.data import Comparison, LineRange, read_comparisons, split_dev
from rmserve.training.ensemble_build import load_member, normalized_scores
from rmserve.training.evaluate import pair_outcomes, regroup
from rmserve.usage import CommandParser, UsageError, add_debug_flag, run

K_GRID = (0.5, 1.0, 2.0)
RESAMPLES = 10_000


def shared_split(versions: Sequence[ModelVersion]) -> tuple[Path, LineRange | None, float, int]:
    """The training data, lines, dev fraction and dev seed every member's manifest records, or a UsageError."""
    splits = {}
    for version in versions:
        training = version.manifest.training
        if training is None or training.dev_fraction is None or training.split_seed is None:
            raise UsageError(f"--members: {version.name} records no training data, so no dev split to choose on")
        splits[version.name] = (training.data, training.lines, training.dev_fraction, training.split_seed)
    if len(set(splits.values())) > 1:
        described = "; ".join(f"{name}: {split}" for name, split in splits.items())
        raise UsageError(f"--members do not share one dev split (data, lines, fraction, dev seed): {described}")
    data, lines, fraction, dev_seed = next(iter(splits.values()))
    return Path(data), None if lines is None else LineRange.parse(lines), fraction, dev_seed


def dev_outcomes(versions: Sequence[ModelVersion]) -> dict[str, np.ndarray]:
    """Per dev pair 1 / 0.5 / 0 for each member and each combination of two or more members."""
    data, lines, fraction, dev_seed = shared_split(versions)

    def dev_split(comparisons: list[Comparison]) -> list[Comparison]:
        return split_dev(comparisons, fraction, dev_seed)[1]

    scores, groups = normalized_scores(versions, (data, lines), dev_split)
    outcomes = {name: pair_outcomes(regroup(values, groups)) for name, values in scores.items()}
    for size in range(2, len(versions) + 1):
        for subset in itertools.combinations(scores, size):
            label = " + ".join(subset)
            for k in K_GRID:
                combined = combine({name: scores[name] for name in subset}, k)
                outcomes[f"{label}: conservative k={k:g}"] = pair_outcomes(regroup(combined.conservative, groups))
            outcomes[f"{label}: mean"] = pair_outcomes(regroup(combined.mean, groups))
            outcomes[f"{label}: min"] = pair_outcomes(regroup(combined.min, groups))
    return outcomes


def held_out_outcomes(
    versions: Sequence[ModelVersion], held_out: Path, held_out_lines: LineRange | None, k: float
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per held-out pair 1 / 0.5 / 0 for each member and mean, conservative, min; and for the bag of words."""
    data, lines, _, _ = shared_split(versions)
    scores, groups = normalized_scores(versions, (held_out, held_out_lines))
    combined = combine(scores, k)
    outcomes = {name: pair_outcomes(regroup(values, groups)) for name, values in scores.items()}
    outcomes |= {which: pair_outcomes(regroup(combined.reward(which), groups)) for which in REWARDS}
    bag = BagOfWords().fit(read_comparisons(data, lines)).scores(read_comparisons(held_out, held_out_lines))
    return outcomes, pair_outcomes(bag)


def paired_bootstrap(a: np.ndarray, b: np.ndarray, resamples: int = RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """95% interval of mean(a) - mean(b) over the same pairs, resampled with replacement. [pairs] each"""
    rows = np.random.default_rng(seed).integers(0, len(a), size=(resamples, len(a)))
    differences = (a[rows] - b[rows]).mean(axis=1)
    low, high = np.quantile(differences, [0.025, 0.975])
    return float(low), float(high)


def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(prog="python -m rmserve.training.selection", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--members", nargs="+", required=True, metavar="MODEL", help="repository models")
    parser.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY, help="model repository")
    parser.add_argument("--held-out", type=Path, help="the final choice's held-out file (instead of the dev table)")
    parser.add_argument("--held-out-lines", type=line_range, help="use only these lines, e.g. 1801-2312")
    parser.add_argument("--k", type=float, default=1.0, help="conservative = mean - k * std (with --held-out)")
    parser.set_defaults(handler=_run, command="training.selection")  # errors read `rmserve training.selection: ...`
    add_debug_flag(parser)
    return run(parser.parse_args(argv))


def _run(args: argparse.Namespace) -> int:
    versions = [load_member(args.repository, name) for name in args.members]
    if args.held_out is None:
        outcomes = dev_outcomes(versions)
        pairs = len(next(iter(outcomes.values())))
        ranked = sorted(outcomes.items(), key=lambda item: -item[1].mean())
        print_table(f"pairwise accuracy on {pairs} dev pairs", [(label, f"{o.mean():.4f}") for label, o in ranked])
        return 0
    outcomes, bag = held_out_outcomes(versions, args.held_out, args.held_out_lines, args.k)
    rows = [("bag of words (TF-IDF + logistic regression)", f"{bag.mean():.4f}")]
    for label, values in outcomes.items():
        low, high = paired_bootstrap(values, bag)
        rows.append((label, f"{values.mean():.4f}  vs bag {values.mean() - bag.mean():+.4f} [{low:+.4f}, {high:+.4f}]"))
    print_table(f"pairwise accuracy on {len(bag)} held-out pairs, k={args.k:g} (95% paired bootstrap)", rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
