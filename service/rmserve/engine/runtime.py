"""What runs a version's graph (RMSERVE_RUNTIME): ONNX Runtime's session, or OpenVINO's in bf16, behind one
interface."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from rmserve.config import OPENVINO_BF16
from rmserve.engine.session import OnnxScorer


class Scorer(Protocol):
    """What a version scores with: `OnnxScorer`, or `rmserve.engine.openvino_session.OpenVinoScorer`."""

    embedding_output: str | None

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray: ...

    def score_and_embed(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


def open_scorer(runtime: str, model_path: Path, threads: int, runs: int, embedding_output: str) -> Scorer:
    """A version's scorer on `runtime` (`rmserve.config.RUNTIMES`): `runs` runs at once, `threads` threads each."""
    if runtime == OPENVINO_BF16:
        from rmserve.engine.openvino_session import OpenVinoScorer  # the openvino extra, only when chosen

        return OpenVinoScorer(model_path, runs, threads, embedding_output)
    return OnnxScorer(model_path, threads, embedding_output=embedding_output)
