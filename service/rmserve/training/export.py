"""`rmserve export`: a training run -> a model repository version with proof it scores right.

In order: trace the network to ONNX (dynamic batch and sequence axes); compare ONNX with
torch on held-out data (max abs diff, ranking agreement); optionally quantize to int8 and
measure its agreement with fp32; measure normalization and the flags' statistics (score and
length quantiles, the embedding's Gaussian and its distance quantiles, `rmserve.training.stats`)
on training responses and accuracy
with baselines on held-out pairs, all with the file that will be served; write the manifest.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rmserve.core.embedding import EMBEDDING_OUTPUT
from rmserve.core.manifest import (
    MODEL_FILE,
    TOKENIZER_FILE,
    Evaluation,
    Manifest,
    file_digests,
    sha256_of,
)
from rmserve.core.repository import verify_version
from rmserve.engine.session import OnnxScorer
from rmserve.training.baselines import baseline_accuracies
from rmserve.training.checkpoint import load_run, torch_score_fn
from rmserve.training.data import LineRange, read_comparisons
from rmserve.training.evaluate import encode_comparisons, pairwise_accuracy, ranking_agreement, score_comparisons
from rmserve.training.options import ExportConfig
from rmserve.training.stats import measure_training

OPSET = 17
ONNX_THREADS = 2


def export(config: ExportConfig) -> Manifest:
    trained = load_run(config.run)
    version_dir = config.repository / config.name / str(config.version)
    version_dir.mkdir(parents=True, exist_ok=True)
    input_format = trained.input_format()
    held_out = read_comparisons(config.held_out, config.held_out_lines)
    held_out_encoded = encode_comparisons(input_format, held_out)
    pad_id = trained.special.pad_id

    with tempfile.TemporaryDirectory() as scratch:
        fp32_path = Path(scratch) / "model.fp32.onnx"
        export_onnx(trained.network, fp32_path)
        torch_scores = score_comparisons(torch_score_fn(trained.network), held_out_encoded, pad_id)
        fp32_scores = score_comparisons(OnnxScorer(fp32_path, ONNX_THREADS), held_out_encoded, pad_id)
        parity: dict[str, Any] = {
            "data": _describe(config.held_out, config.held_out_lines),
            "max_abs_diff": float(max(np.max(np.abs(a - b)) for a, b in zip(torch_scores, fp32_scores, strict=False))),
            "ranking_agreement": ranking_agreement(torch_scores, fp32_scores),
        }
        if config.int8:
            quantize_int8(fp32_path, version_dir / MODEL_FILE)
        else:
            shutil.copyfile(fp32_path, version_dir / MODEL_FILE)

    served = OnnxScorer(version_dir / MODEL_FILE, ONNX_THREADS)
    served_scores = fp32_scores  # the fp32 file is served as is; only an int8 graph needs scoring again
    if config.int8:
        served_scores = score_comparisons(served, held_out_encoded, pad_id)
        parity["int8_agreement_with_fp32"] = ranking_agreement(fp32_scores, served_scores)
        parity["int8_max_abs_diff"] = float(
            max(np.max(np.abs(a - b)) for a, b in zip(fp32_scores, served_scores, strict=False))
        )
    training_path, training_lines = Path(trained.training["data"]), _lines(trained.training.get("lines"))
    training_data = read_comparisons(training_path, training_lines)
    # Every training response through the served graph: normalization, the flags' statistics, embedding_stats.npz.
    normalization, training_stats = measure_training(
        served, input_format, training_data, pad_id, version_dir, _describe(training_path, training_lines)
    )
    trained.tokenizer.save(str(version_dir / TOKENIZER_FILE))
    manifest = Manifest(
        name=config.name,
        version=config.version,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        sha256=sha256_of(version_dir / MODEL_FILE),
        architecture=trained.architecture,
        max_length=trained.max_length,
        tokens=trained.special,
        input_format=input_format.to_manifest(),
        normalization=normalization,
        quantization="int8-dynamic" if config.int8 else None,
        evaluation=Evaluation(
            pairwise_accuracy=pairwise_accuracy(served_scores),
            n=sum(len(s) * (len(s) - 1) // 2 for s in served_scores),
            data=_describe(config.held_out, config.held_out_lines),
            baselines=baseline_accuracies(training_data, held_out),
        ),
        parity=parity,
        training=trained.training,
        files=file_digests(version_dir),
        training_stats=training_stats,
    )
    manifest.write(version_dir)
    return manifest


class ScoreAndEmbedding(torch.nn.Module):
    """What is traced: the network's raw reward and, as a second output, the pooled embedding its head reads."""

    def __init__(self, network: torch.nn.Module):
        super().__init__()
        self.network = network

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.network.score_and_embedding(input_ids, attention_mask)


def export_onnx(network: torch.nn.Module, path: Path) -> None:
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


def quantize_int8(source: Path, target: Path) -> None:
    """Dynamic int8 quantization of the matrix multiplies and the embedding tables (weights int8, per channel).

    Per output channel, because one scale per matrix reordered 12% of MiniLM's dev pairs (4% per channel;
    hh-harmless: 1.1%, and 0.6% per channel with its tables); the tables (`Gather`), because a word-embedding
    matrix is most of an encoder's file (MiniLM: 59 MB with it fp32, 23 MB int8, the same dev agreement).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(source),
        str(target),
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=["MatMul", "Gemm", "Gather"],
    )


def quantize_version(
    source: Path, repository: Path, name: str, version: int, held_out: Path, held_out_lines: LineRange | None
) -> Manifest:
    """An int8 copy of a served fp32 version, with its own manifest numbers, beside the original.

    The same protocol as `export --int8`, from the committed graph instead of a training run:
    quantize, score the held-out pairs once with both graphs (agreement, accuracy), measure
    normalization, flag and embedding statistics on the training responses with the int8 graph.
    Baselines do not depend on the graph and are carried over.
    """
    fp32 = verify_version(source)
    version_dir = repository / name / str(version)
    version_dir.mkdir(parents=True, exist_ok=True)
    quantize_int8(fp32.model_path, version_dir / MODEL_FILE)
    shutil.copyfile(source / TOKENIZER_FILE, version_dir / TOKENIZER_FILE)
    pad_id = fp32.manifest.tokens.pad_id
    held_out_encoded = encode_comparisons(fp32.format, read_comparisons(held_out, held_out_lines, fp32.format.layouts))
    served = OnnxScorer(version_dir / MODEL_FILE, ONNX_THREADS)
    fp32_scores = score_comparisons(OnnxScorer(fp32.model_path, ONNX_THREADS), held_out_encoded, pad_id)
    int8_scores = score_comparisons(served, held_out_encoded, pad_id)
    training = fp32.manifest.training or {}
    training_path, training_lines = Path(training["data"]), _lines(training.get("lines"))
    training_data = read_comparisons(training_path, training_lines, fp32.format.layouts)
    # Every training response through the int8 graph: its own normalization, flag and embedding statistics.
    normalization, training_stats = measure_training(
        served, fp32.format, training_data, pad_id, version_dir, _describe(training_path, training_lines)
    )
    parity = {
        **(fp32.manifest.parity or {}),
        "quantized_from": {
            "name": fp32.manifest.name,
            "version": fp32.manifest.version,
            "sha256": fp32.manifest.sha256,
        },
        "int8_agreement_with_fp32": ranking_agreement(fp32_scores, int8_scores),
        "int8_max_abs_diff": float(max(np.max(np.abs(a - b)) for a, b in zip(fp32_scores, int8_scores, strict=True))),
    }
    manifest = fp32.manifest.model_copy(
        update={
            "name": name,
            "version": version,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "sha256": sha256_of(version_dir / MODEL_FILE),
            "files": file_digests(version_dir),
            "normalization": normalization,
            "training_stats": training_stats,
            "quantization": "int8-dynamic",
            "evaluation": fp32.manifest.evaluation.model_copy(
                update={
                    "pairwise_accuracy": pairwise_accuracy(int8_scores),
                    "data": _describe(held_out, held_out_lines),
                }
            ),
            "parity": parity,
        }
    )
    manifest.write(version_dir)
    return manifest


def _describe(path: Path, lines: LineRange | None) -> str:
    return f"{path.name} lines {lines}" if lines else path.name


def _lines(text: str | None) -> LineRange | None:
    return None if text is None else LineRange.parse(text)
