"""`rmserve eval`: a repository model's pairwise accuracy on a preference file, beside the baselines."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rmserve.arguments import input_file, positive_int
from rmserve.config import DEFAULT_REPOSITORY
from rmserve.training.console import DATA_FORMATS, line_range, print_accuracy_table, subcommand
from rmserve.training.data import LineRange
from rmserve.training.options import EVAL_THREADS
from rmserve.usage import UsageError, require_model


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add `rmserve eval`."""
    parser = subcommand(
        subparsers,
        "eval",
        "pairwise accuracy of a repository model on a preference file, beside baselines (needs the [train] extra)",
        "Score every (better, worse) pair in FILE with a model from the repository and print its "
        "pairwise accuracy next to shorter-wins, longer-wins and a TF-IDF bag-of-words logistic regression "
        "trained on the model's own training split (or --baseline-data).",
    )
    parser.add_argument("model", help="model name in the repository, or a version directory")
    parser.add_argument("file", type=input_file, help=DATA_FORMATS)
    parser.add_argument("--lines", type=line_range, help="use only these lines, e.g. 1801-2312")
    parser.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY, help="model repository")
    parser.add_argument("--version", type=positive_int, help="version to evaluate (default: highest)")
    parser.add_argument(
        "--baseline-data",
        type=input_file,
        help="training data for the bag-of-words baseline (default: the model's training data)",
    )
    parser.add_argument("--baseline-lines", type=line_range, help="lines of --baseline-data to train on")
    parser.add_argument("--threads", type=positive_int, default=EVAL_THREADS, help="ONNX Runtime intra-op threads")
    parser.add_argument(
        "--report",
        type=Path,
        metavar="DIR",
        help="also write DIR/report.png (score distributions, accuracy by length, calibration) and DIR/report.json",
    )
    parser.set_defaults(handler=_eval)


def _eval(args: argparse.Namespace) -> int:
    from rmserve.engine.version import load_model, load_version
    from rmserve.training.baselines import baseline_accuracies
    from rmserve.training.data import read_comparisons
    from rmserve.training.evaluate import encode_comparisons, pairwise_accuracy, score_comparisons

    if args.report is not None and args.report.exists() and not args.report.is_dir():
        raise UsageError(f"--report {args.report} is a file; pass a directory for report.png and report.json")
    model_path = Path(args.model)
    if model_path.is_dir():
        version = load_version(model_path, args.threads)
    else:
        require_model(args.repository, args.model, "--repository")
        version = load_model(args.repository, args.model, args.threads, args.version)
    manifest = version.manifest
    held_out = read_comparisons(args.file, args.lines, version.format.layouts)
    encoded = encode_comparisons(version.format, held_out)
    scores = score_comparisons(version.scorer, encoded, manifest.tokens.pad_id)
    baseline_path, baseline_lines = args.baseline_data, args.baseline_lines
    training = manifest.training
    if baseline_path is None and training is not None:
        baseline_path = Path(training.data)
        baseline_lines = LineRange.parse(training.lines) if training.lines else None
        if not baseline_path.is_file():
            raise UsageError(
                f"the bag-of-words baseline trains on the model's training data, {baseline_path}, not found from "
                f"{Path.cwd()}: run where the model was trained (the project root), or pass --baseline-data"
            )
    baselines: dict[str, float] = {}
    if baseline_path is not None:
        baseline_data = read_comparisons(baseline_path, baseline_lines, version.format.layouts)
        baselines = baseline_accuracies(baseline_data, held_out)
    else:  # an imported model: nothing it was trained on is known here
        print("rmserve eval: no training data recorded; pass --baseline-data for the baselines", file=sys.stderr)
    pairs = sum(len(s) * (len(s) - 1) // 2 for s in scores)
    where = f"{args.file}" + (f" lines {args.lines}" if args.lines else "")
    label = f"{manifest.name} v{manifest.version}"
    print_accuracy_table(where, pairs, pairwise_accuracy(scores), baselines, label)
    if args.report:
        from rmserve.training.eval_report import report_numbers, write_report

        numbers = report_numbers(held_out, scores, manifest.normalization)
        data_name = args.file.name + (f" lines {args.lines}" if args.lines else "")
        png, numbers_file = write_report(args.report, numbers, f"{label} on {data_name}")
        print(f"\nreport: {png} and {numbers_file}")
    return 0
