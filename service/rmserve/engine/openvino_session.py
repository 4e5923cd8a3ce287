"""OpenVINO inference in bf16: padded token batches in, one raw reward per row out, as `OnnxScorer` does.

`RMSERVE_RUNTIME=openvino-bf16` serves an fp32 graph through OpenVINO's CPU plugin with bf16 inference
precision, which runs on Intel AMX (or AVX512_BF16) units. On MiniLM's fp32 graph, on a Xeon with AMX, it
ran 3.5 times ONNX Runtime's fp32 and 1.45 times its dynamic int8, ranking 512 training comparisons as fp32
does (benchmarks page, "Precisions and runtimes"). A CPU without bf16 makes OpenVINO compute in fp32, which
was half ONNX Runtime's speed there, so loading says so. The package is the `openvino` extra, imported only
here and only when this runtime is chosen.

Concurrency: one compiled model with one stream per run in flight (`runs`, the server's executors), each
stream `threads` wide; each executor thread keeps its own infer request, so runs never queue on each other.
"""

from __future__ import annotations

import importlib
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from rmserve.core.embedding import EMBEDDING_OUTPUT
from rmserve.engine.session import raw_rows

log = logging.getLogger(__name__)
PRECISION = "bf16"


class OpenVinoScorer:
    """One compiled model on OpenVINO's CPU plugin; create it in the process that uses it (after fork)."""

    def __init__(
        self,
        model_path: Path,
        runs: int,
        threads: int,
        embedding_output: str = EMBEDDING_OUTPUT,
        precision: str = PRECISION,  # bench/precisions.py also measures "f32"
    ):
        openvino: Any = importlib.import_module("openvino")
        core = openvino.Core()
        if precision == PRECISION and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            log.warning("%s: this CPU has no bf16 (AMX or AVX512_BF16): OpenVINO computes in fp32", model_path)
        self.compiled = core.compile_model(
            str(model_path),
            "CPU",
            {
                "INFERENCE_PRECISION_HINT": precision,
                "NUM_STREAMS": runs,
                "INFERENCE_NUM_THREADS": runs * threads,
                "ENABLE_CPU_PINNING": False,  # the executors are Python threads the OS schedules
            },
        )
        inputs = {name for port in self.compiled.inputs for name in port.get_names()}
        if not {"input_ids", "attention_mask"} <= inputs:
            raise ValueError(f"{model_path}: graph inputs are {sorted(inputs)}, need input_ids and attention_mask")
        # An output port has every name the graph gives its tensor (an exported graph's embedding is also
        # the name of the node that made it): look for the one asked for among all of them.
        score, *others = self.compiled.outputs
        self.output_name = score.get_any_name()
        self._score = score
        self._embedding = next((port for port in others if embedding_output in port.get_names()), None)
        self.embedding_output = None if self._embedding is None else embedding_output
        self._local = threading.local()

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """[batch, seq] int64 x2 -> [batch] float64 raw rewards."""
        outputs = self._infer(input_ids, attention_mask)
        return raw_rows(np.asarray(outputs[self._score]), len(input_ids), self.output_name)

    def score_and_embed(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[batch, seq] int64 x2 -> raw rewards [batch] float64, pooled embeddings [batch, dim], from one run."""
        if self._embedding is None:
            raise ValueError(f"the graph has no output {EMBEDDING_OUTPUT!r}")
        outputs = self._infer(input_ids, attention_mask)
        embedding = np.asarray(outputs[self._embedding], dtype=np.float32)
        if embedding.ndim != 2 or len(embedding) != len(input_ids):
            raise ValueError(
                f"model output {self.embedding_output!r} has shape {embedding.shape}; expected [batch, dim]"
            )
        scores = raw_rows(np.asarray(outputs[self._score]), len(input_ids), self.output_name)
        return scores, embedding

    def _infer(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> Any:
        request = getattr(self._local, "request", None)
        if request is None:  # this executor thread's own
            request = self._local.request = self.compiled.create_infer_request()
        return request.infer({"input_ids": input_ids, "attention_mask": attention_mask})
