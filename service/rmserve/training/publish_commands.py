"""`rmserve export | import | quantize`: the commands that publish a new version into a model repository."""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rmserve.arguments import input_file, model_name, non_negative_int, positive_int, sequence_length
from rmserve.core.manifest import Parity
from rmserve.training.console import (
    DATA_FORMATS,
    add_held_out,
    config_defaults,
    hf_checkpoint,
    hf_checkpoint_or_adapter,
    line_range,
    print_accuracy_table,
    print_table,
    subcommand,
)
from rmserve.training.options import IMPORT_LAYOUTS, ExportConfig, HeadChoice, ImportConfig
from rmserve.usage import UsageError

if TYPE_CHECKING:
    from rmserve.core.manifest import Manifest

Rows = list[tuple[str, str]]  # (label, value) lines of a summary table


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add export, import and quantize, in the order `rmserve --help` lists them."""
    _add_export(subparsers)
    _add_import(subparsers)
    _add_quantize(subparsers)


def _add_version_written(parser: argparse.ArgumentParser, example: str) -> None:
    """Where a command writes its repository version: <repository>/<name>/<version>/."""
    defaults = config_defaults(ExportConfig)
    parser.add_argument("--repository", type=Path, default=defaults["repository"], help="model repository")
    parser.add_argument("--name", type=model_name, required=True, help=f"model name in the repository, e.g. {example}")
    parser.add_argument(
        "--version", type=positive_int, default=defaults["version"], help="version number (directory name)"
    )
    parser.add_argument(
        "--max-batch-tokens",
        type=positive_int,
        help="the padded-token run budget this model serves best with, as measured (docs: benchmarks), recorded in "
        "its manifest as serving.max_batch_tokens; the server uses it unless RMSERVE_MAX_BATCH_TOKENS is set",
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
    parser.add_argument(
        "--int8",
        action="store_true",
        help="serve a graph with int8 weights (fp32 arithmetic: the same scores on every CPU)",
    )
    parser.set_defaults(handler=_export)


def _add_import(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subcommand(
        subparsers,
        "import",
        "turn a Hugging Face reward model checkpoint into a repository version (needs the [train] extra)",
        "Import a local reward model checkpoint without training: an AutoModelForSequenceClassification "
        "(encoder or decoder), an OpenRLHF reward model, a TRL or LLaMA-Factory value-head model, or a PEFT "
        "LoRA adapter (merged into its base). ONNX graph, tokenizer, text laid out as the model was trained "
        "(--layout), "
        "normalization from --calibration responses, parity against transformers' forward pass and the "
        "trainer's tokenization, optional int8, sha256 of every file.",
    )
    defaults = config_defaults(ImportConfig)
    parser.add_argument(
        "checkpoint", type=hf_checkpoint_or_adapter, metavar="HF_DIR", help="save_pretrained() directory of the model"
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
    parser.add_argument(
        "--layout",
        choices=IMPORT_LAYOUTS,
        default=defaults["layout"],
        help="how the model was trained: chat_template (its tokenizer's chat template: TRL conversational data), "
        "text (prompt + response + EOS as one sequence: TRL plain data), pair (tokenizer(prompt, response): "
        "cross-encoders); auto takes the checkpoint's chat template, else guesses and says so",
    )
    parser.add_argument("--int8", action="store_true", help="store the weights int8 and report agreement with fp32")
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


def head_weights(text: str) -> tuple[float, ...]:
    """`--head-weights 0.5,0.5`: one finite number per output of the head."""
    try:
        weights = tuple(float(part) for part in text.split(","))
    except ValueError:
        weights = (math.nan,)
    if not all(math.isfinite(weight) for weight in weights):
        raise argparse.ArgumentTypeError(f"must be numbers separated by commas, got {text!r}")
    return weights


def _add_quantize(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subcommand(
        subparsers,
        "quantize",
        "an int8 copy of a repository version, with its own accuracy, agreement and normalization",
        "Write <repository>/<name>/<version>/ from a served fp32 version directory: its graph with the weight "
        "matrices and embedding tables stored int8 (one scale per 32 values of an output channel, per table row; "
        "fp32 arithmetic, so every CPU and batch scores alike), the same tokenizer, and a manifest whose held-out "
        "accuracy, agreement with fp32 and normalization are measured with the int8 graph.",
    )
    parser.add_argument("source", type=Path, help="fp32 version directory, e.g. models/hh-harmless/1")
    add_held_out(parser, "agreement and evaluation")
    _add_version_written(parser, "hh-harmless-int8")
    parser.set_defaults(handler=_quantize)


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
            max_batch_tokens=args.max_batch_tokens,
        )
    )
    parity = manifest.parity or Parity()
    measured = [
        _sha256_row(manifest),
        ("parity max |torch - onnx|", f"{parity.max_abs_diff:.2e}"),
        ("parity ranking agreement", f"{parity.ranking_agreement:.4f}"),
        *_int8_rows(manifest),
    ]
    _print_summary("export", args.repository, manifest, measured)
    _print_evaluation(manifest)
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
        layout=args.layout,
        int8=args.int8,
        base=args.base,
        head=HeadChoice(index=args.head, weights=args.head_weights),
        max_batch_tokens=args.max_batch_tokens,
    )
    try:
        manifest = import_checkpoint(config)
    except CheckpointError as error:  # what to change in the checkpoint: the user's to fix
        raise UsageError(str(error)) from None
    parity, source = manifest.parity or Parity(), manifest.source
    assert source is not None  # an import records its source
    measured = [
        ("checkpoint format", str(manifest.architecture["checkpoint_format"])),
        ("reward", str(manifest.architecture["reward"])),
        ("model type", str(manifest.architecture["model_type"])),
        ("layout", f"{manifest.input_format['style']} ({source.layout})"),
        ("max_length", str(manifest.max_length)),
        ("files (sha256)", ", ".join(sorted(manifest.files))),
        (f"parity on {parity.items} items", str(parity.data)),
        ("max |transformers - onnx|", f"{parity.max_abs_diff:.2e}"),
        ("ranking agreement", f"{parity.ranking_agreement:.4f}"),
        ("tokens equal transformers'", f"{parity.tokenization_matches_transformers:.4f}"),
        *_int8_rows(manifest),
    ]
    calibration = [
        ("normalization from", source.normalization),
        ("calibration pairwise accuracy", f"{source.calibration_pairwise_accuracy:.4f}"),
    ]
    _print_summary("import", args.repository, manifest, measured, calibration)
    return 0


def _quantize(args: argparse.Namespace) -> int:
    _require_new_version(args)
    from rmserve.training.export import quantize_version

    manifest = quantize_version(
        args.source, args.repository, args.name, args.version, args.held_out, args.held_out_lines, args.max_batch_tokens
    )
    parity = manifest.parity or Parity()
    int8_difference = ("int8 max |fp32 - int8|", f"{parity.int8_max_abs_diff:.3e}")
    measured = [_sha256_row(manifest), *_int8_rows(manifest), int8_difference]
    _print_summary("quantize", args.repository, manifest, measured)
    _print_evaluation(manifest)
    return 0


def _sha256_row(manifest: Manifest) -> tuple[str, str]:
    return ("sha256", manifest.sha256[:16] + "...")


def _int8_rows(manifest: Manifest) -> Rows:
    """The int8 graph's agreement with fp32, for a quantized version."""
    parity = manifest.parity or Parity()
    return [("int8 agreement with fp32", f"{parity.int8_agreement_with_fp32:.4f}")] if manifest.quantization else []


def _print_summary(
    command: str, repository: Path, manifest: Manifest, measured: Rows, after: Sequence[tuple[str, str]] = ()
) -> None:
    """`<command> summary`: where the version went, what the command measured, its normalization."""
    normalization = manifest.normalization
    rows = [
        ("version directory", str(repository / manifest.name / str(manifest.version))),
        *measured,
        ("normalization mean / std", f"{normalization.mean:.4f} / {normalization.std:.4f}"),
        *after,
    ]
    print_table(f"{command} summary", rows)


def _print_evaluation(manifest: Manifest) -> None:
    """The held-out accuracy the manifest records, beside its baselines."""
    evaluation = manifest.evaluation
    print_accuracy_table(evaluation.data or "", evaluation.n, evaluation.pairwise_accuracy or 0.0, evaluation.baselines)
