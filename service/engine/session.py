"""ONNX Runtime inference: padded token batches in, one raw reward per row out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort


class OnnxScorer:
    """Owns one InferenceSession; create it in the process that uses it (after fork)."""

    def __init__(self, model_path: Path, intra_op_threads: int, inter_op_threads: int = 1):
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = inter_op_threads
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        input_names = {node.name for node in self.session.get_inputs()}
        if not {"input_ids", "attention_mask"} <= input_names:
            raise ValueError(f"{model_path}: graph inputs are {sorted(input_names)}, need input_ids and attention_mask")
        self.output_name = self.session.get_outputs()[0].name

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """[batch, seq] int64 x2 -> [batch] float64 raw rewards."""
        (raw,) = self.session.run([self.output_name], {"input_ids": input_ids, "attention_mask": attention_mask})
        raw = np.asarray(raw, dtype=np.float64)
        if raw.shape not in ((len(input_ids),), (len(input_ids), 1)):
            raise ValueError(f"model output {self.output_name!r} has shape {raw.shape}; expected [batch] or [batch, 1]")
        return raw.reshape(len(input_ids))
