"""`rmserve train`: its flags come from the config dataclasses' fields, so each default is written once."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rmserve.arguments import fraction, input_file, non_negative_int, positive_float, positive_int, sequence_length
from rmserve.training.console import DATA_FORMATS, config_defaults, hf_checkpoint, line_range, print_table, subcommand
from rmserve.training.options import ModelConfig, TrainConfig
from rmserve.usage import UsageError


@dataclass(frozen=True)
class TrainFlag:
    """A `rmserve train` flag that sets one field of a config dataclass; its default and type come from the field."""

    name: str
    config: type
    field: str
    help: str
    parse: Callable[[str], Any] = positive_int  # counts and sizes; seeds, optional counts and rates say otherwise
    choices: tuple[str, ...] | None = None


TRAIN_FLAGS = (
    TrainFlag("--seed", TrainConfig, "seed", "seed for the dev split, initialisation and batches", parse=int),
    TrainFlag(
        "--dev-seed",
        TrainConfig,
        "dev_seed",
        "seed for the dev split alone (default: --seed): members trained with one --dev-seed share a dev split",
        parse=int,
    ),
    TrainFlag(
        "--dev-fraction", TrainConfig, "dev_fraction", "share of the data held out for early stopping", parse=fraction
    ),
    TrainFlag("--epochs", TrainConfig, "epochs", "maximum epochs of ranking-loss training"),
    TrainFlag("--patience", TrainConfig, "patience", "stop after this many epochs without dev improvement"),
    TrainFlag("--batch-size", TrainConfig, "batch_size", "comparisons per optimizer step"),
    TrainFlag(
        "--learning-rate",
        TrainConfig,
        "learning_rate",
        "AdamW peak learning rate (try 5e-5 with --base)",
        parse=positive_float,
    ),
    TrainFlag(
        "--loss",
        TrainConfig,
        "loss",
        "loss for rankings of more than two responses; pairs use Bradley-Terry",
        parse=str,
        choices=("plackett-luce", "all-pairs"),
    ),
    TrainFlag(
        "--max-length", ModelConfig, "max_length", "tokens per (prompt, response) sequence", parse=sequence_length
    ),
    TrainFlag("--vocab-size", ModelConfig, "vocab_size", "BPE vocabulary size (from scratch)"),
    TrainFlag("--d-model", ModelConfig, "d_model", "transformer width (from scratch)"),
    TrainFlag("--layers", ModelConfig, "n_layers", "transformer layers (from scratch)"),
    TrainFlag("--heads", ModelConfig, "n_heads", "attention heads (from scratch)"),
    TrainFlag(
        "--towers",
        ModelConfig,
        "n_towers",
        "transformers trained with different seeds and averaged in the graph (from scratch)",
    ),
    TrainFlag(
        "--ngram-orders",
        ModelConfig,
        "ngram_orders",
        "bag of hashed response n-grams up to this order; 0 turns it off (from scratch)",
        parse=non_negative_int,
    ),
    TrainFlag(
        "--hash-buckets",
        ModelConfig,
        "hash_buckets",
        "hash buckets for token n-grams and again for character n-grams; a prime (from scratch)",
    ),
    TrainFlag(
        "--pretrain-epochs",
        TrainConfig,
        "pretrain_epochs",
        "masked-LM epochs on the training transcripts before ranking training (from scratch)",
        parse=non_negative_int,
    ),
    TrainFlag("--threads", TrainConfig, "threads", "torch CPU threads"),
)


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add `rmserve train`."""
    parser = subcommand(
        subparsers,
        "train",
        "train a reward model on preference data (needs the [train] extra)",
        "Train a reward model on preference data and save a run directory for `rmserve export`. "
        "From scratch: a byte-level BPE tokenizer on the training text, a small transformer and an in-graph "
        "bag of hashed n-grams. With --base: fine-tune a local Hugging Face checkpoint.",
    )
    parser.add_argument("data", type=input_file, help=DATA_FORMATS)
    parser.add_argument("-o", "--out", type=Path, required=True, help="run directory to write")
    parser.add_argument("--lines", type=line_range, help="use only these 1-based lines, e.g. 1-1800")
    parser.add_argument("--base", type=hf_checkpoint, help="local Hugging Face checkpoint directory to fine-tune")
    for flag in TRAIN_FLAGS:
        default = config_defaults(flag.config)[flag.field]
        parser.add_argument(
            flag.name,
            dest=flag.field,
            metavar=None if flag.choices else flag.name.removeprefix("--").replace("-", "_").upper(),
            type=flag.parse,
            choices=flag.choices,
            default=default,
            help=flag.help,
        )
    parser.set_defaults(handler=_train)


def _train(args: argparse.Namespace) -> int:
    from rmserve.training.train import train

    if args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())):
        raise UsageError(f"-o {args.out} already exists: pass a new run directory (or remove that one)")
    if args.base is None and args.d_model % args.n_heads:
        raise UsageError(f"--d-model {args.d_model} must be a multiple of --heads {args.n_heads}")
    chosen: dict[type, dict[str, Any]] = {flag.config: {} for flag in TRAIN_FLAGS}
    for flag in TRAIN_FLAGS:
        chosen[flag.config][flag.field] = getattr(args, flag.field)
    # One --hash-buckets sizes both hashed bags (token and character n-grams).
    model = ModelConfig(**chosen[ModelConfig], char_buckets=args.hash_buckets)
    config = TrainConfig(
        data=args.data, out=args.out, lines=args.lines, base=args.base, model=model, **chosen[TrainConfig]
    )
    trained = train(config)
    trained.save(config.out)
    record = trained.training
    rows = [
        ("run directory", str(args.out)),
        ("train / dev comparisons", f"{record['train_comparisons']} / {record['dev_comparisons']}"),
    ]
    if "bag_of_ngrams" in record:
        rows.append(("bag of n-grams dev accuracy", f"{record['bag_of_ngrams']['dev_accuracy']:.4f}"))
    for index, tower in enumerate(record["transformer"], start=1):
        epochs = " ".join(f"{accuracy:.3f}" for accuracy in tower["dev_accuracy_per_epoch"])
        rows.append((f"transformer {index} dev accuracy by epoch", epochs))
    if "blend" in record:
        rows.append(("deep weight (fit on dev)", f"{record['blend']['deep_weight']:.3f}"))
    rows += [("dev pairwise accuracy", f"{record['dev_accuracy']:.4f}"), ("seconds", f"{record['seconds']:.0f}")]
    print_table("training summary", rows)
    return 0
