"""`rmserve ensemble NAME --members A B ...`: an ensemble of repository models, `<repository>/NAME/ensemble.json`.

Every member scores the same responses with its served graph, each in its own input format
(as `rmserve eval` does for one model), on its own normalized scale. On the
calibration responses, the std across members gives the disagreement quantiles whose p99 is
the `high_disagreement` cut; on held-out pairs (optional), the pairwise accuracy of every
member and of mean, conservative and min, on the same pairs.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from rmserve.arguments import model_name
from rmserve.config import DEFAULT_REPOSITORY
from rmserve.core.ensemble_spec import ENSEMBLE_FILE, REWARDS, EnsembleSpec, Reward, combine
from rmserve.core.manifest import Quantiles
from rmserve.core.repository import InvalidModel, ensemble_spec, model_names, version_dirs
from rmserve.engine.version import ModelVersion, load_model
from rmserve.training.console import accuracy_rows, add_held_out, line_range, print_table, subcommand
from rmserve.training.cpu_isa import int8_isa
from rmserve.training.data import Comparison, LineRange, read_comparisons
from rmserve.training.evaluate import encode_comparisons, pairwise_accuracy, regroup, score_comparisons
from rmserve.training.options import EVAL_THREADS
from rmserve.usage import UsageError, require_model

DEFAULTS = EnsembleSpec.model_fields  # k and reward: their defaults are the spec's


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `rmserve ensemble` to the `rmserve` parser."""
    parser = subcommand(
        subparsers,
        "ensemble",
        "combine repository models into an ensemble served like a model: writes <repository>/NAME/ensemble.json",
        "Write <repository>/NAME/ensemble.json naming member models of the same repository: the std across "
        "members on the --calibration responses (its p99 is the high_disagreement cut) and, with --held-out, "
        "the pairwise accuracy of every member and of mean, conservative (mean - k*std) and min. Each member "
        "scores with its served graph, in its own input format.",
    )
    parser.add_argument("name", type=model_name, help="the ensemble's name in the repository, e.g. hh-ensemble")
    parser.add_argument("--members", nargs="+", required=True, metavar="MODEL", help="two or more repository models")
    parser.add_argument("--k", type=float, default=DEFAULTS["k"].default, help="conservative = mean - k * std")
    parser.add_argument(
        "--reward",
        choices=REWARDS,
        default=DEFAULTS["reward"].default,
        help="what /get_reward, /classify and /v2 return (`?reward=` in the URL overrides it per request)",
    )
    parser.add_argument(
        "--calibration",
        type=Path,
        required=True,
        help="preference file whose responses set the disagreement quantiles (the members' training lines)",
    )
    parser.add_argument("--calibration-lines", type=line_range, help="use only these lines, e.g. 1-1800")
    add_held_out(parser, "the held-out accuracy of members and combinations", required=False)
    parser.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY, help="model repository")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    spec = build_ensemble(
        args.repository,
        args.name,
        args.members,
        args.k,
        args.reward,
        (args.calibration, args.calibration_lines),
        None if args.held_out is None else (args.held_out, args.held_out_lines),
    )
    assert spec.disagreement is not None
    disagreement = spec.disagreement
    print_table(
        "ensemble summary",
        [
            ("ensemble file", str(args.repository / args.name / ENSEMBLE_FILE)),
            ("members", ", ".join(spec.members)),
            ("k / reward", f"{spec.k:g} / {spec.reward}"),
            ("calibration", spec.calibration or ""),
            ("std across members p50 / p99", f"{disagreement.p50:.4f} / {disagreement.p99:.4f}"),
        ],
    )
    evaluation = spec.evaluation
    if evaluation:
        accuracies = evaluation["members"] | {name: evaluation[name] for name in REWARDS}
        print_table(
            f"pairwise accuracy on {evaluation['n']} pairs of {evaluation['data']}",
            accuracy_rows(evaluation["n"], accuracies),
        )
    return 0


Data = tuple[Path, LineRange | None]  # a preference file and the lines of it to use
Select = Callable[[list[Comparison]], list[Comparison]]  # which of a file's comparisons to score


def build_ensemble(
    repository: Path,
    name: str,
    members: Sequence[str],
    k: float,
    reward: Reward,
    calibration: Data,
    held_out: Data | None = None,
) -> EnsembleSpec:
    """Measure the members on calibration (and held-out) responses and write `<repository>/<name>/ensemble.json`."""
    try:
        spec = EnsembleSpec(members=list(members), k=k, reward=reward)
    except ValidationError as error:  # fewer than two members, a repeated one, a negative k
        problem = error.errors()[0]
        raise UsageError(f"--{problem['loc'][0]}: {problem['msg']}") from None
    require_model(repository, None, "--repository")
    entry = repository / name
    if entry.is_dir() and version_dirs(repository, name):
        raise UsageError(f"{entry} is a model (it has versions); an ensemble needs a name of its own")
    versions = [load_member(repository, member) for member in members]
    calibration_scores, _ = normalized_scores(versions, calibration)
    std = combine(calibration_scores, k).std  # [responses]
    updates = {
        "disagreement": Quantiles.of(std.tolist()),
        "calibration": _describe(calibration),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if held_out is not None:
        updates["evaluation"] = _held_out_accuracy(versions, held_out, k)
    spec = spec.model_copy(update=updates)
    entry.mkdir(exist_ok=True)
    spec.write(entry)
    return spec


def load_member(repository: Path, name: str) -> ModelVersion:
    """The version the server would serve for a member, or a one-line error saying why it cannot be one."""
    if name not in model_names(repository):
        raise UsageError(
            f"--members: no model {name!r} in {repository} (it holds: {', '.join(model_names(repository)) or 'none'})"
        )
    if ensemble_spec(repository, name) is not None:
        raise UsageError(f"--members: {name!r} is itself an ensemble; members must be models")
    try:
        return load_model(repository, name, EVAL_THREADS)
    except InvalidModel as error:
        raise UsageError(f"--members: {name!r} cannot be served: {error}") from None


def normalized_scores(
    versions: Sequence[ModelVersion], data: Data, select: Select | None = None
) -> tuple[dict[str, np.ndarray], list[list[str]]]:
    """Each member's normalized scores of every response of `data` [responses], and the responses per comparison.

    `select` picks the comparisons to score (the same ones for every member: it sees them in file order).
    """
    scores, groups = {}, []
    for version in versions:
        comparisons = read_comparisons(data[0], data[1], version.format.layouts)  # as the server reads its requests
        if select is not None:
            comparisons = select(comparisons)
        encoded = encode_comparisons(version.format, comparisons)
        raw = np.concatenate(score_comparisons(version.scorer, encoded, version.manifest.tokens.pad_id))
        scores[version.name] = version.normalize(raw)
        groups = [list(comparison.responses) for comparison in comparisons]
    return scores, groups


def _held_out_accuracy(versions: Sequence[ModelVersion], data: Data, k: float) -> dict[str, object]:
    """Pairwise accuracy of each member and of mean, conservative and min on the same held-out pairs."""
    scores, groups = normalized_scores(versions, data)
    combined = combine(scores, k)
    pairs = sum(len(group) * (len(group) - 1) // 2 for group in groups)
    return {
        "data": _describe(data),
        "n": pairs,
        "isa": int8_isa(),  # the members' int8 kernels depend on it
        "members": {member: pairwise_accuracy(regroup(values, groups)) for member, values in scores.items()},
        **{which: pairwise_accuracy(regroup(combined.reward(which), groups)) for which in REWARDS},
    }


def _describe(data: Data) -> str:
    path, lines = data
    return f"{path.name} lines {lines}" if lines else path.name
