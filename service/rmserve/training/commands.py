"""`rmserve train | export | import | quantize | eval | ensemble`: the training half of the CLI.

`rmserve.cli` calls `register(subparsers)`. Nothing here imports torch at module level, so the
serving CLI stays light; each handler imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rmserve.arguments import (
    fraction,
    input_file,
    model_name,
    non_negative_int,
    positive_float,
    positive_int,
    sequence_length,
)
from rmserve.config import DEFAULT_REPOSITORY
from rmserve.core.manifest import Parity
from rmserve.training import ensemble_build
from rmserve.training.console import accuracy_rows, add_held_out, line_range, print_table, subcommand
from rmserve.training.data import LineRange
from rmserve.training.options import EVAL_THREADS, ExportConfig, HeadChoice, ImportConfig, ModelConfig, TrainConfig
from rmserve.usage import CommandParser, UsageError, add_debug_flag, parse_command_line, require_model, run

DATA_FORMATS = (
    "JSONL, plain or .gz, one object per line: HH-RLHF {chosen, rejected} transcripts; "
    "{prompt, chosen, rejected}; TRL conversational message lists; or rankings "
    "{prompt, responses: [best..worst]} / with ranking: [indices best first]"
)


def hf_checkpoint(text: str) -> Path:
    """A local `save_pretrained()` directory; checked here, so a path that is not one is never looked up on a hub."""
    path = Path(text)
    if not any((path / name).is_file() for name in ("config.json", "adapter_config.json")):
        raise argparse.ArgumentTypeError(
            f"no Hugging Face checkpoint at {path} (no config.json or adapter_config.json); nothing is downloaded: "
            "pass a local save_pretrained() directory"
        )
    return path


def head_weights(text: str) -> tuple[float, ...]:
    """`--head-weights 0.5,0.5`: one finite number per output of the head."""
    try:
        weights = tuple(float(part) for part in text.split(","))
    except ValueError:
        weights = (math.nan,)
    if not all(math.isfinite(weight) for weight in weights):
        raise argparse.ArgumentTypeError(f"must be numbers separated by commas, got {text!r}")
    return weights


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the train, export, import, quantize, eval and ensemble subcommands to the `rmserve` parser."""
    # Checkpoints are local directories: transformers must never ask a model hub, and a failed command's
    # stderr is its one line, not weight-loading progress bars. Both are read when transformers is first imported.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    _add_train(subparsers)
    _add_export(subparsers)
    _add_import(subparsers)
    _add_quantize(subparsers)
    _add_eval(subparsers)
    ensemble_build.register(subparsers)


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


def _defaults(config: type) -> dict[str, Any]:
    """A config dataclass's field defaults, so each default is written once (in the dataclass)."""
    return {field.name: field.default for field in dataclasses.fields(config)}


def _add_train(subparsers: argparse._SubParsersAction[Any]) -> None:
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
        default = _defaults(flag.config)[flag.field]
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


def _add_version_written(parser: argparse.ArgumentParser, example: str) -> None:
    """Where a command writes its repository version: <repository>/<name>/<version>/."""
    defaults = _defaults(ExportConfig)
    parser.add_argument("--repository", type=Path, default=defaults["repository"], help="model repository")
    parser.add_argument("--name", type=model_name, required=True, help=f"model name in the repository, e.g. {example}")
    parser.add_argument(
        "--version", type=positive_int, default=defaults["version"], help="version number (directory name)"
    )


def _require_new_version(args: argparse.Namespace) -> None:
    """A version is written once: never over one that exists (a server may be serving it, pinned by its sha256)."""
    version_dir = args.repository / args.name / str(args.version)
    if version_dir.exists():
        raise UsageError(f"{version_dir} already exists: pick another --version (versions are never overwritten)")


def _add_export(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subcommand(
        subparsers,
        "export",
        "export a training run to the model repository: ONNX, tokenizer, manifest (needs the [train] extra)",
        "Write <repository>/<name>/<version>/ from a run directory: model.onnx (dynamic batch and "
        "sequence axes), tokenizer.json and manifest.json with sha256, normalization on training responses, "
        "a torch-vs-ONNX parity check, optional int8 agreement, and held-out accuracy beside baselines.",
    )
    parser.add_argument("run", type=Path, help="run directory written by `rmserve train`")
    add_held_out(parser, "parity and evaluation")
    _add_version_written(parser, "hh-harmless")
    parser.add_argument("--int8", action="store_true", help="serve an int8 dynamically quantized graph")
    parser.set_defaults(handler=_export)


def _add_import(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subcommand(
        subparsers,
        "import",
        "turn a Hugging Face reward model checkpoint into a repository version (needs the [train] extra)",
        "Import a local reward model checkpoint without training: an AutoModelForSequenceClassification "
        "(encoder or decoder), an OpenRLHF reward model, a TRL or LLaMA-Factory value-head model, or a PEFT "
        "LoRA adapter (merged into its base). ONNX graph, tokenizer, the input format from its tokenizer config "
        "(chat template, else pair template), normalization from --calibration responses, parity against transformers' "
        "forward pass, optional int8, sha256 of every file.",
    )
    defaults = _defaults(ImportConfig)
    parser.add_argument(
        "checkpoint", type=hf_checkpoint, metavar="HF_DIR", help="save_pretrained() directory of the model"
    )
    _add_version_written(parser, "my-rm")
    parser.add_argument(
        "--calibration",
        type=input_file,
        help="preference file (" + DATA_FORMATS + "): normalization, parity and int8 agreement on its responses "
        "(without it: parity on built-in probes, no normalization)",
    )
    parser.add_argument("--calibration-lines", type=line_range, help="use only these lines of --calibration")
    parser.add_argument(
        "--max-length",
        type=sequence_length,
        default=defaults["max_length"],
        help="tokens per item (capped by the model's positions and its tokenizer's limit)",
    )
    parser.add_argument("--int8", action="store_true", help="quantize to dynamic int8 and report agreement with fp32")
    parser.add_argument(
        "--base", type=hf_checkpoint, metavar="HF_DIR", help="a PEFT adapter's base model (default: the adapter's own)"
    )
    head = parser.add_mutually_exclusive_group()
    head.add_argument("--head", type=non_negative_int, metavar="INDEX", help="the reward is this output of the head")
    head.add_argument(
        "--head-weights",
        type=head_weights,
        metavar="W1,W2,...",
        help="the reward is this weighted sum of the head's outputs, one weight per output",
    )
    parser.set_defaults(handler=_import)


def _add_quantize(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subcommand(
        subparsers,
        "quantize",
        "an int8 copy of a repository version, with its own accuracy, agreement and normalization",
        "Write <repository>/<name>/<version>/ from a served fp32 version directory: its graph with int8 "
        "dynamic quantization of the matrix multiplies and embedding tables (per output channel), the same "
        "tokenizer, and a manifest whose held-out "
        "accuracy, agreement with fp32 and normalization are measured with the int8 graph.",
    )
    parser.add_argument("source", type=Path, help="fp32 version directory, e.g. models/hh-harmless/1")
    add_held_out(parser, "agreement and evaluation")
    _add_version_written(parser, "hh-harmless-int8")
    parser.set_defaults(handler=_quantize)


def _quantize(args: argparse.Namespace) -> int:
    _require_new_version(args)
    from rmserve.training.export import quantize_version

    manifest = quantize_version(
        args.source, args.repository, args.name, args.version, args.held_out, args.held_out_lines
    )
    parity = manifest.parity or Parity()
    print_table(
        "quantize summary",
        [
            ("version directory", str(args.repository / manifest.name / str(manifest.version))),
            ("sha256", manifest.sha256[:16] + "..."),
            ("int8 agreement with fp32", f"{parity.int8_agreement_with_fp32:.4f}"),
            ("int8 max |fp32 - int8|", f"{parity.int8_max_abs_diff:.3e}"),
            ("normalization mean / std", f"{manifest.normalization.mean:.4f} / {manifest.normalization.std:.4f}"),
        ],
    )
    evaluation = manifest.evaluation
    _print_accuracy_table(
        evaluation.data or "", evaluation.n, evaluation.pairwise_accuracy or 0.0, evaluation.baselines
    )
    return 0


def _add_eval(subparsers: argparse._SubParsersAction[Any]) -> None:
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


def _export(args: argparse.Namespace) -> int:
    from rmserve.training.checkpoint import TRAINING_FILE
    from rmserve.training.export import export

    if not (args.run / TRAINING_FILE).is_file():
        raise UsageError(
            f"{args.run} is not a training run (no {TRAINING_FILE}): pass the -o directory of `rmserve train`"
        )
    _require_new_version(args)

    manifest = export(
        ExportConfig(
            run=args.run,
            repository=args.repository,
            name=args.name,
            version=args.version,
            held_out=args.held_out,
            held_out_lines=args.held_out_lines,
            int8=args.int8,
        )
    )
    parity = manifest.parity or Parity()
    rows = [
        ("version directory", str(args.repository / manifest.name / str(manifest.version))),
        ("sha256", manifest.sha256[:16] + "..."),
        ("parity max |torch - onnx|", f"{parity.max_abs_diff:.2e}"),
        ("parity ranking agreement", f"{parity.ranking_agreement:.4f}"),
    ]
    if manifest.quantization:
        rows.append(("int8 agreement with fp32", f"{parity.int8_agreement_with_fp32:.4f}"))
    rows.append(("normalization mean / std", f"{manifest.normalization.mean:.4f} / {manifest.normalization.std:.4f}"))
    print_table("export summary", rows)
    evaluation = manifest.evaluation
    _print_accuracy_table(
        evaluation.data or "", evaluation.n, evaluation.pairwise_accuracy or 0.0, evaluation.baselines
    )
    return 0


def _import(args: argparse.Namespace) -> int:
    _require_new_version(args)  # before torch and transformers load
    from rmserve.training.checkpoint_formats import CheckpointError
    from rmserve.training.importer import import_checkpoint

    config = ImportConfig(
        checkpoint=args.checkpoint,
        name=args.name,
        repository=args.repository,
        version=args.version,
        calibration=args.calibration,
        calibration_lines=args.calibration_lines,
        max_length=args.max_length,
        int8=args.int8,
        base=args.base,
        head=HeadChoice(index=args.head, weights=args.head_weights),
    )
    try:
        manifest = import_checkpoint(config)
    except CheckpointError as error:  # what to change in the checkpoint: the user's to fix
        raise UsageError(str(error)) from None
    parity, source = manifest.parity or Parity(), manifest.source
    assert source is not None  # an import records its source
    rows = [
        ("version directory", str(args.repository / manifest.name / str(manifest.version))),
        ("checkpoint format", str(manifest.architecture["checkpoint_format"])),
        ("reward", str(manifest.architecture["reward"])),
        ("model type", str(manifest.architecture["model_type"])),
        ("input format", str(manifest.input_format["style"])),
        ("max_length", str(manifest.max_length)),
        ("files (sha256)", ", ".join(sorted(manifest.files))),
        (f"parity on {parity.items} items", str(parity.data)),
        ("max |transformers - onnx|", f"{parity.max_abs_diff:.2e}"),
        ("ranking agreement", f"{parity.ranking_agreement:.4f}"),
        ("tokens equal transformers'", f"{parity.tokenization_matches_transformers:.4f}"),
    ]
    if manifest.quantization:
        rows.append(("int8 agreement with fp32", f"{parity.int8_agreement_with_fp32:.4f}"))
    rows += [
        ("normalization mean / std", f"{manifest.normalization.mean:.4f} / {manifest.normalization.std:.4f}"),
        ("normalization from", source.normalization),
        ("calibration pairwise accuracy", f"{source.calibration_pairwise_accuracy:.4f}"),
    ]
    print_table("import summary", rows)
    return 0


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
    _print_accuracy_table(where, pairs, pairwise_accuracy(scores), baselines, label)
    if args.report:
        from rmserve.training.eval_report import report_numbers, write_report

        numbers = report_numbers(held_out, scores, manifest.normalization)
        data_name = args.file.name + (f" lines {args.lines}" if args.lines else "")
        png, numbers_file = write_report(args.report, numbers, f"{label} on {data_name}")
        print(f"\nreport: {png} and {numbers_file}")
    return 0


def _print_accuracy_table(
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


def main(argv: list[str] | None = None) -> int:
    """Run train/export/eval without the serving CLI: `python -m rmserve.training.commands train ...`."""
    parser = CommandParser(prog="rmserve")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    register(commands)
    for command in commands.choices.values():
        add_debug_flag(command)
    return run(parse_command_line(parser, argv))


if __name__ == "__main__":
    sys.exit(main())
