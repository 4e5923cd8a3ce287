"""What every training-side command shares on the command line: its parser, argument types, defaults, tables."""

from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path
from typing import Any

from rmserve.arguments import input_file
from rmserve.training.data import LineRange

DATA_FORMATS = (
    "JSONL, plain or .gz, one object per line: HH-RLHF {chosen, rejected} transcripts; "
    "{prompt, chosen, rejected}; TRL conversational message lists; or rankings "
    "{prompt, responses: [best..worst]} / with ranking: [indices best first]"
)


class HelpWithDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """Show "(default: X)" only where there is a default worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def line_range(text: str) -> LineRange:
    """`--lines 1-1800`; a malformed range is argparse's one-line usage error, not a traceback."""
    try:
        return LineRange.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def hf_checkpoint(text: str) -> Path:
    """A local `save_pretrained()` model directory, checked here so a path that is not one never goes to a hub."""
    return _local_checkpoint(text, ("config.json",))


def hf_checkpoint_or_adapter(text: str) -> Path:
    """A local `save_pretrained()` directory of a model or of a PEFT adapter."""
    return _local_checkpoint(text, ("config.json", "adapter_config.json"))


def _local_checkpoint(text: str, markers: tuple[str, ...]) -> Path:
    path = Path(text)
    if not any((path / name).is_file() for name in markers):
        raise argparse.ArgumentTypeError(
            f"no Hugging Face checkpoint at {path} (no {' or '.join(markers)}); nothing is downloaded: "
            "pass a local save_pretrained() directory"
        )
    return path


def config_defaults(config: type) -> dict[str, Any]:
    """A config dataclass's field defaults, so each default is written once (in the dataclass)."""
    return {field.name: field.default for field in dataclasses.fields(config)}


def subcommand(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], name: str, summary: str, description: str
) -> argparse.ArgumentParser:
    return subparsers.add_parser(name, help=summary, description=description, formatter_class=HelpWithDefaults)


def add_held_out(parser: argparse.ArgumentParser, purpose: str, required: bool = True) -> None:
    parser.add_argument("--held-out", type=input_file, required=required, help=f"preference file for {purpose}")
    parser.add_argument("--held-out-lines", type=line_range, help="use only these lines, e.g. 1801-2312")


def accuracy_rows(pairs: int, accuracies: dict[str, float]) -> list[tuple[str, str]]:
    """(label, accuracy with its 95% interval, binomial: ±1.96·sqrt(p(1-p)/n)) per scorer."""
    return [
        (label, f"{p:.4f}  ±{1.96 * math.sqrt(p * (1 - p) / max(pairs, 1)):.3f}") for label, p in accuracies.items()
    ]


def print_accuracy_table(
    data: str, pairs: int, accuracy: float, baselines: dict[str, float], label: str = "reward model"
) -> None:
    """Accuracy with a 95% interval beside each baseline."""
    names = {
        "shorter_wins": "shorter response wins",
        "longer_wins": "longer response wins",
        "bag_of_words": "bag of words (TF-IDF + logistic regression)",
    }
    accuracies = {label: accuracy} | {names.get(name, name): value for name, value in baselines.items()}
    print_table(f"pairwise accuracy on {pairs} pairs of {data}", accuracy_rows(pairs, accuracies))


def print_table(title: str, rows: list[tuple[str, str]]) -> None:
    width = max(len(key) for key, _ in rows)
    print(f"\n{title}")
    print("-" * (width + 2 + max(len(value) for _, value in rows)))
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
