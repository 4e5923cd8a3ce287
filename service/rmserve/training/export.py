"""`rmserve export` and `rmserve quantize`: a training run, or a served fp32 version, -> a new repository version.

Both publish through `rmserve.training.publish`: export traces the run's network to ONNX (dynamic
batch and sequence axes) with the trained torch model as its parity reference, and held-out accuracy
beside baselines; quantize makes an int8 copy of a served fp32 version, checked against that graph.
Normalization and the flags' statistics come from the run's training responses through the served graph.
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from rmserve.core.embedding import EMBEDDING_OUTPUT
from rmserve.core.formats import InputFormat
from rmserve.core.manifest import TOKENIZER_FILE, Manifest, Parity, QuantizedFrom, TrainingRecord
from rmserve.core.repository import verify_version
from rmserve.training.baselines import baseline_accuracies
from rmserve.training.checkpoint import RewardNetwork, load_run, torch_score_fn
from rmserve.training.data import LineRange, read_comparisons
from rmserve.training.evaluate import encode_comparisons, score_comparisons
from rmserve.training.options import ExportConfig
from rmserve.training.parity import Reference
from rmserve.training.publish import Measured, Probes, Publication, Responses, claim_version, data_label, publish
from rmserve.usage import UsageError

OPSET = 17


def export(config: ExportConfig) -> Manifest:
    """Publish a training run as `<repository>/<name>/<version>`, scoring as the trained torch model does."""
    target = claim_version(config.repository, config.name, config.version)
    trained = load_run(config.run)
    training = TrainingRecord.model_validate(trained.training)
    input_format = trained.input_format()
    held_out = read_comparisons(config.held_out, config.held_out_lines, input_format.layouts)
    probes = Probes(
        encode_comparisons(input_format, held_out),
        trained.special.pad_id,
        data_label(config.held_out, config.held_out_lines),
    )
    reference = Reference(
        "the trained torch model", score_comparisons(torch_score_fn(trained.network), probes.encoded, probes.pad_id)
    )
    responses = _training_responses(training, input_format)
    baselines = baseline_accuracies(responses.comparisons, held_out)

    def describe(measured: Measured) -> Manifest:
        return measured.manifest(
            architecture=trained.architecture,
            max_length=trained.max_length,
            tokens=trained.special,
            input_format=input_format.to_manifest(),
            evaluation=measured.evaluation(baselines),
            training=training,
        )

    return publish(
        Publication(
            target,
            probes,
            fp32_graph=traced(trained.network),
            reference=reference,
            write_tokenizer=lambda staged: trained.tokenizer.save(str(staged / TOKENIZER_FILE)),
            describe=describe,
            responses=responses,
            int8=config.int8,
            max_batch_tokens=config.max_batch_tokens,
        )
    )


def quantize_version(
    source: Path,
    repository: Path,
    name: str,
    version: int,
    held_out: Path,
    held_out_lines: LineRange | None,
    max_batch_tokens: int | None = None,
) -> Manifest:
    """An int8 copy of a served fp32 version, with its own manifest numbers, beside the original.

    The same protocol as `export --int8`, from the served graph instead of a training run: its parity
    record stands, the int8 graph is checked against it on the held-out pairs (agreement, accuracy), and
    normalization, flag and embedding statistics are measured with the int8 graph. Baselines do not depend
    on the graph and are carried over.
    """
    target = claim_version(repository, name, version)
    fp32 = verify_version(source)
    manifest = fp32.manifest
    if manifest.training is None:
        raise UsageError(f"{source}: its manifest records no training data to measure the int8 graph's statistics on")
    probes = Probes(
        encode_comparisons(fp32.format, read_comparisons(held_out, held_out_lines, fp32.format.layouts)),
        manifest.tokens.pad_id,
        data_label(held_out, held_out_lines),
    )
    origin = QuantizedFrom(name=manifest.name, version=manifest.version, sha256=manifest.sha256)
    carried = (manifest.parity or Parity()).model_copy(update={"quantized_from": origin})

    def describe(measured: Measured) -> Manifest:
        return measured.manifest(
            architecture=manifest.architecture,
            max_length=manifest.max_length,
            tokens=manifest.tokens,
            input_format=manifest.input_format,
            evaluation=measured.evaluation(manifest.evaluation.baselines),
            training=manifest.training,
            source=manifest.source,
        )

    return publish(
        Publication(
            target,
            probes,
            fp32_graph=lambda _scratch: fp32.model_path,
            reference=carried,
            write_tokenizer=lambda staged: shutil.copyfile(source / TOKENIZER_FILE, staged / TOKENIZER_FILE),
            describe=describe,
            responses=_training_responses(manifest.training, fp32.format),
            int8=True,
            max_batch_tokens=max_batch_tokens,
        )
    )


def _training_responses(training: TrainingRecord, input_format: InputFormat) -> Responses:
    """The run's training comparisons, as its record names them (the file, the lines)."""
    lines = None if training.lines is None else LineRange.parse(training.lines)
    path = Path(training.data)
    return Responses(input_format, read_comparisons(path, lines, input_format.layouts), data_label(path, lines))


def traced(network: RewardNetwork) -> Callable[[Path], Path]:
    """The pipeline's fp32 graph for a torch network: traced into its scratch directory."""

    def trace(scratch: Path) -> Path:
        export_onnx(network, scratch / "model.fp32.onnx")
        return scratch / "model.fp32.onnx"

    return trace


class ScoreAndEmbedding(torch.nn.Module):
    """What is traced: the network's raw reward and, as a second output, the pooled embedding its head reads."""

    def __init__(self, network: RewardNetwork):
        super().__init__()
        self.network = network

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.network.score_and_embedding(input_ids, attention_mask)


def export_onnx(network: RewardNetwork, path: Path) -> None:
    """Trace `(input_ids, attention_mask) -> (raw_score [batch], embedding [batch, dim])`, dynamic batch, sequence."""
    network.eval()
    example = (torch.tensor([[2, 10, 11, 3, 12, 13, 3]] * 2), torch.ones(2, 7, dtype=torch.long))
    dynamic = {0: "batch", 1: "sequence"}
    with warnings.catch_warnings():
        # torch warns that an advanced index (`hidden[rows, last]`, `table[input_ids]`) exported to ONNX
        # gives wrong results for negative indices. Ours are never negative: batch row numbers, token
        # ids, and the last real position `attention_mask.sum(1) - 1` (every row holds at least its
        # first token). Were one ever negative, the parity check right after export would fail.
        warnings.filterwarnings("ignore", message=r"Exporting aten::index operator", category=UserWarning)
        torch.onnx.export(
            ScoreAndEmbedding(network).eval(),  # export restores the mode it finds: eval, as `network` was
            example,
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=["raw_score", EMBEDDING_OUTPUT],
            dynamic_axes={
                "input_ids": dynamic,
                "attention_mask": dynamic,
                "raw_score": {0: "batch"},
                EMBEDDING_OUTPUT: {0: "batch"},
            },
            opset_version=OPSET,
            dynamo=False,
        )
