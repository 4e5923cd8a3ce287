"""`rmserve train | export | eval`: the training half of the CLI.

`rmserve.cli` calls `register(subparsers)`. Nothing here imports torch at module level, so the
serving CLI stays light; each handler imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from pathlib import Path
from typing import Any

from rmserve.config import DEFAULT_REPOSITORY
from rmserve.training.config import EVAL_THREADS, ExportConfig, ModelConfig, TrainConfig
from rmserve.training.data import LineRange

DATA_FORMATS = (
    "JSONL, plain or .gz, one object per line: HH-RLHF {chosen, rejected} transcripts; "
    "{prompt, chosen, rejected}; TRL conversational message lists; or rankings "
    "{prompt, responses: [best..worst]} / with ranking: [indices best first]"
)


class _HelpWithDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """Show "(default: X)" only where there is a default worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the train, export and eval subcommands to the `rmserve` parser."""
    _add_train(subparsers)
    _add_export(subparsers)
    _add_quantize(subparsers)
    _add_eval(subparsers)


def _defaults(config: type) -> dict[str, Any]:
    """A config dataclass's field defaults, so each default is written once (in the dataclass)."""
    return {field.name: field.default for field in dataclasses.fields(config)}


def _subcommand(
    subparsers: argparse._SubParsersAction, name: str, summary: str, description: str
) -> argparse.ArgumentParser:
    return subparsers.add_parser(name, help=summary, description=description, formatter_class=_HelpWithDefaults)


def _add_train(subparsers: argparse._SubParsersAction) -> None:
    parser = _subcommand(
        subparsers,
        "train",
        "train a reward model on preference data (needs the [train] extra)",
        "Train a reward model on preference data and save a run directory for `rmserve export`. "
        "From scratch: a byte-level BPE tokenizer on the training text, a small transformer and an in-graph "
        "bag of hashed n-grams. With --base: fine-tune a local Hugging Face checkpoint.",
    )
    parser.add_argument("data", type=Path, help=DATA_FORMATS)
    parser.add_argument("-o", "--out", type=Path, required=True, help="run directory to write")
    parser.add_argument("--lines", type=LineRange.parse, help="use only these 1-based lines, e.g. 1-1800")
    parser.add_argument("--base", type=Path, help="local Hugging Face checkpoint directory to fine-tune")
    # Defaults come from TrainConfig and ModelConfig, where they are defined once.
    train_default, model_default = _defaults(TrainConfig), _defaults(ModelConfig)
    parser.add_argument(
        "--seed", type=int, default=train_default["seed"], help="seed for the dev split, initialisation and batches"
    )
    parser.add_argument(
        "--dev-fraction",
        type=float,
        default=train_default["dev_fraction"],
        help="share of the data held out for early stopping",
    )
    parser.add_argument(
        "--epochs", type=int, default=train_default["epochs"], help="maximum epochs of ranking-loss training"
    )
    parser.add_argument(
        "--patience",
        type=int,
        default=train_default["patience"],
        help="stop after this many epochs without dev improvement",
    )
    parser.add_argument(
        "--batch-size", type=int, default=train_default["batch_size"], help="comparisons per optimizer step"
    )
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=train_default["learning_rate"],
        help="AdamW peak learning rate (try 5e-5 with --base)",
    )
    parser.add_argument(
        "--loss",
        choices=["plackett-luce", "all-pairs"],
        default=train_default["loss"],
        help="loss for rankings of more than two responses; pairs use Bradley-Terry",
    )
    parser.add_argument(
        "--max-length", type=int, default=model_default["max_length"], help="tokens per (prompt, response) sequence"
    )
    parser.add_argument(
        "--vocab-size", type=int, default=model_default["vocab_size"], help="BPE vocabulary size (from scratch)"
    )
    parser.add_argument(
        "--d-model", type=int, default=model_default["d_model"], help="transformer width (from scratch)"
    )
    parser.add_argument(
        "--layers", type=int, default=model_default["n_layers"], help="transformer layers (from scratch)"
    )
    parser.add_argument("--heads", type=int, default=model_default["n_heads"], help="attention heads (from scratch)")
    parser.add_argument(
        "--towers",
        type=int,
        default=model_default["n_towers"],
        help="transformers trained with different seeds and averaged in the graph (from scratch)",
    )
    parser.add_argument(
        "--ngram-orders",
        type=int,
        default=model_default["ngram_orders"],
        help="bag of hashed response n-grams up to this order; 0 turns it off (from scratch)",
    )
    parser.add_argument(
        "--hash-buckets",
        type=int,
        default=model_default["hash_buckets"],
        help="hash buckets for token n-grams and again for character n-grams; a prime (from scratch)",
    )
    parser.add_argument(
        "--pretrain-epochs",
        type=int,
        default=train_default["pretrain_epochs"],
        help="masked-LM epochs on the training transcripts before ranking training (from scratch)",
    )
    parser.add_argument("--threads", type=int, default=train_default["threads"], help="torch CPU threads")
    parser.set_defaults(handler=_train)


def _add_export(subparsers: argparse._SubParsersAction) -> None:
    parser = _subcommand(
        subparsers,
        "export",
        "export a training run to the model repository (ONNX + tokenizer + manifest)",
        "Write <repository>/<name>/<version>/ from a run directory: model.onnx (dynamic batch and "
        "sequence axes), tokenizer.json and manifest.json with sha256, normalization on training responses, "
        "a torch-vs-ONNX parity check, optional int8 agreement, and held-out accuracy beside baselines.",
    )
    parser.add_argument("run", type=Path, help="run directory written by `rmserve train`")
    parser.add_argument("--held-out", type=Path, required=True, help="preference file for parity and evaluation")
    parser.add_argument("--held-out-lines", type=LineRange.parse, help="use only these lines, e.g. 1801-2312")
    parser.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY, help="model repository")
    parser.add_argument("--name", required=True, help="model name, e.g. hh-harmless")
    parser.add_argument(
        "--version", type=int, default=_defaults(ExportConfig)["version"], help="version number (directory name)"
    )
    parser.add_argument("--int8", action="store_true", help="serve an int8 dynamically quantized graph")
    parser.set_defaults(handler=_export)


def _add_quantize(subparsers: argparse._SubParsersAction) -> None:
    parser = _subcommand(
        subparsers,
        "quantize",
        "an int8 copy of a repository version, with its own accuracy, agreement and normalization",
        "Write <repository>/<name>/<version>/ from a served fp32 version directory: its graph with int8 "
        "dynamic quantization of the matrix multiplies, the same tokenizer, and a manifest whose held-out "
        "accuracy, agreement with fp32 and normalization are measured with the int8 graph.",
    )
    parser.add_argument("source", type=Path, help="fp32 version directory, e.g. models/repository/hh-harmless/1")
    parser.add_argument("--held-out", type=Path, required=True, help="preference file for agreement and evaluation")
    parser.add_argument("--held-out-lines", type=LineRange.parse, help="use only these lines, e.g. 1801-2312")
    parser.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY, help="model repository")
    parser.add_argument("--name", required=True, help="model name, e.g. hh-harmless-int8")
    parser.add_argument("--version", type=int, default=1, help="version number (directory name)")
    parser.set_defaults(handler=_quantize)


def _quantize(args: argparse.Namespace) -> int:
    from rmserve.training.export import quantize_version

    manifest = quantize_version(
        args.source, args.repository, args.name, args.version, args.held_out, args.held_out_lines
    )
    parity = manifest.parity or {}
    _print_table(
        "quantize summary",
        [
            ("version directory", str(args.repository / manifest.name / str(manifest.version))),
            ("sha256", manifest.sha256[:16] + "..."),
            ("int8 agreement with fp32", f"{parity['int8_agreement_with_fp32']:.4f}"),
            ("int8 max |fp32 - int8|", f"{parity['int8_max_abs_diff']:.3e}"),
            ("normalization mean / std", f"{manifest.normalization.mean:.4f} / {manifest.normalization.std:.4f}"),
        ],
    )
    evaluation = manifest.evaluation
    _print_accuracy_table(
        evaluation.data or "", evaluation.n, evaluation.pairwise_accuracy or 0.0, evaluation.baselines
    )
    return 0


def _add_eval(subparsers: argparse._SubParsersAction) -> None:
    parser = _subcommand(
        subparsers,
        "eval",
        "pairwise accuracy of a repository model on a preference file, beside baselines",
        "Score every (better, worse) pair in FILE with a model from the repository and print its "
        "pairwise accuracy next to shorter-wins, longer-wins and a TF-IDF bag-of-words logistic regression "
        "trained on the model's own training split (or --baseline-data).",
    )
    parser.add_argument("model", help="model name in the repository, or a version directory")
    parser.add_argument("file", type=Path, help=DATA_FORMATS)
    parser.add_argument("--lines", type=LineRange.parse, help="use only these lines, e.g. 1801-2312")
    parser.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY, help="model repository")
    parser.add_argument("--version", type=int, help="version to evaluate (default: highest)")
    parser.add_argument(
        "--baseline-data",
        type=Path,
        help="training data for the bag-of-words baseline (default: the model's training data)",
    )
    parser.add_argument("--baseline-lines", type=LineRange.parse, help="lines of --baseline-data to train on")
    parser.add_argument("--threads", type=int, default=EVAL_THREADS, help="ONNX Runtime intra-op threads")
    parser.set_defaults(handler=_eval)


def _train(args: argparse.Namespace) -> int:
    from rmserve.training.train import train

    model = ModelConfig(
        vocab_size=args.vocab_size,
        max_length=args.max_length,
        d_model=args.d_model,
        n_layers=args.layers,
        n_heads=args.heads,
        n_towers=args.towers,
        ngram_orders=args.ngram_orders,
        hash_buckets=args.hash_buckets,
        char_buckets=args.hash_buckets,
    )
    config = TrainConfig(
        data=args.data,
        out=args.out,
        lines=args.lines,
        base=args.base,
        model=model,
        seed=args.seed,
        dev_fraction=args.dev_fraction,
        epochs=args.epochs,
        patience=args.patience,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        loss=args.loss,
        pretrain_epochs=args.pretrain_epochs,
        threads=args.threads,
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
    _print_table("training summary", rows)
    return 0


def _export(args: argparse.Namespace) -> int:
    from rmserve.training.export import export

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
    parity = manifest.parity or {}
    rows = [
        ("version directory", str(args.repository / manifest.name / str(manifest.version))),
        ("sha256", manifest.sha256[:16] + "..."),
        ("parity max |torch - onnx|", f"{parity['max_abs_diff']:.2e}"),
        ("parity ranking agreement", f"{parity['ranking_agreement']:.4f}"),
    ]
    if manifest.quantization:
        rows.append(("int8 agreement with fp32", f"{parity['int8_agreement_with_fp32']:.4f}"))
    rows.append(("normalization mean / std", f"{manifest.normalization.mean:.4f} / {manifest.normalization.std:.4f}"))
    _print_table("export summary", rows)
    evaluation = manifest.evaluation
    _print_accuracy_table(
        evaluation.data or "", evaluation.n, evaluation.pairwise_accuracy or 0.0, evaluation.baselines
    )
    return 0


def _eval(args: argparse.Namespace) -> int:
    from rmserve.engine.version import load_model, load_version
    from rmserve.training.baselines import baseline_accuracies
    from rmserve.training.data import read_comparisons
    from rmserve.training.evaluate import encode_comparisons, pairwise_accuracy, score_comparisons

    model_path = Path(args.model)
    if model_path.is_dir():
        version = load_version(model_path, args.threads)
    else:
        version = load_model(args.repository, args.model, args.threads, args.version)
    manifest = version.manifest
    held_out = read_comparisons(args.file, args.lines, version.format)
    scores = score_comparisons(version.scorer, encode_comparisons(version.encoder, held_out), manifest.tokens.pad_id)
    baseline_path, baseline_lines = args.baseline_data, args.baseline_lines
    if baseline_path is None:
        training = manifest.training or {}
        if "data" not in training:
            print("rmserve eval: the manifest records no training data; pass --baseline-data", file=sys.stderr)
            return 2
        baseline_path = Path(training["data"])
        baseline_lines = LineRange.parse(training["lines"]) if training.get("lines") else None
    baselines = baseline_accuracies(read_comparisons(baseline_path, baseline_lines, version.format), held_out)
    pairs = sum(len(s) * (len(s) - 1) // 2 for s in scores)
    where = f"{args.file}" + (f" lines {args.lines}" if args.lines else "")
    label = f"{manifest.name} v{manifest.version}"
    _print_accuracy_table(where, pairs, pairwise_accuracy(scores), baselines, label)
    return 0


def _print_accuracy_table(
    data: str, pairs: int, accuracy: float, baselines: dict[str, float], label: str = "reward model"
) -> None:
    """Accuracy with a 95% interval (binomial, ±1.96·sqrt(p(1-p)/n)) beside each baseline."""

    def interval(p: float) -> str:
        return f"±{1.96 * math.sqrt(p * (1 - p) / max(pairs, 1)):.3f}"

    rows = [(label, f"{accuracy:.4f}  {interval(accuracy)}")]
    names = {
        "shorter_wins": "shorter response wins",
        "longer_wins": "longer response wins",
        "bag_of_words": "bag of words (TF-IDF + logistic regression)",
    }
    rows += [(names.get(name, name), f"{value:.4f}  {interval(value)}") for name, value in baselines.items()]
    _print_table(f"pairwise accuracy on {pairs} pairs of {data}", rows)


def _print_table(title: str, rows: list[tuple[str, str]]) -> None:
    width = max(len(key) for key, _ in rows)
    print(f"\n{title}")
    print("-" * (width + 2 + max(len(value) for _, value in rows)))
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


def main(argv: list[str] | None = None) -> int:
    """Run train/export/eval without the serving CLI: `python -m rmserve.training.cli train ...`."""
    parser = argparse.ArgumentParser(prog="rmserve")
    register(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = parser.parse_args(argv)
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
