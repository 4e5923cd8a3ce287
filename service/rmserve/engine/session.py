"""ONNX Runtime inference: padded token batches in, one raw reward per row out (and, where the graph
exports one, the pooled embedding of each row)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from rmserve.core.embedding import EMBEDDING_OUTPUT


class OnnxScorer:
    """Owns one InferenceSession; create it in the process that uses it (after fork)."""

    def __init__(
        self,
        model_path: Path,
        intra_op_threads: int,
        inter_op_threads: int = 1,
        embedding_output: str = EMBEDDING_OUTPUT,
    ):
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = inter_op_threads
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        input_names = {node.name for node in self.session.get_inputs()}
        if not {"input_ids", "attention_mask"} <= input_names:
            raise ValueError(f"{model_path}: graph inputs are {sorted(input_names)}, need input_ids and attention_mask")
        outputs = [node.name for node in self.session.get_outputs()]
        self.output_name = outputs[0]
        # The score stays the first output, so graphs without an embedding and their clients work as before.
        self.embedding_output = embedding_output if embedding_output in outputs[1:] else None

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """[batch, seq] int64 x2 -> [batch] float64 raw rewards."""
        (raw,) = self.session.run([self.output_name], {"input_ids": input_ids, "attention_mask": attention_mask})
        return self._raw_scores(raw, len(input_ids))

    def score_and_embed(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[batch, seq] int64 x2 -> raw rewards [batch] float64, pooled embeddings [batch, dim], from one run."""
        if self.embedding_output is None:
            raise ValueError(f"the graph has no output {EMBEDDING_OUTPUT!r}")
        raw, embedding = self.session.run(
            [self.output_name, self.embedding_output], {"input_ids": input_ids, "attention_mask": attention_mask}
        )
        embedding = np.asarray(embedding)
        if embedding.ndim != 2 or len(embedding) != len(input_ids):
            raise ValueError(
                f"model output {self.embedding_output!r} has shape {embedding.shape}; expected [batch, dim]"
            )
        return self._raw_scores(raw, len(input_ids)), embedding

    def _raw_scores(self, raw: object, rows: int) -> np.ndarray:
        return raw_rows(raw, rows, self.output_name)


def raw_rows(raw: object, rows: int, output_name: str) -> np.ndarray:
    """A score output as [rows] float64, or ValueError naming the output."""
    if not isinstance(raw, np.ndarray):  # ONNX Runtime also returns sparse tensors, sequences and maps
        raise ValueError(f"model output {output_name!r} is a {type(raw).__name__}; expected a dense tensor")
    raw = raw.astype(np.float64, copy=False)
    if raw.shape not in ((rows,), (rows, 1)):
        raise ValueError(f"model output {output_name!r} has shape {raw.shape}; expected [batch] or [batch, 1]")
    return raw.reshape(rows)
