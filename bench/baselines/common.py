"""What every baseline server shares with rmserve: the same verified model, tokenizer and ONNX file.

Baselines differ from rmserve only in how they serve: the request threads, queue and batching
of a naive Flask app, PyTriton or LitServe. Text in, the same raw scores out.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from rmserve.core.repository import VerifiedVersion, verify_version, version_dirs
from rmserve.core.tokenizer import pad_batch


def arguments(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--repository", type=Path, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--instances", type=int, default=1, help="concurrent model instances (cores)")
    return parser.parse_args()


def load(repository: Path, name: str) -> VerifiedVersion:
    """The highest version of `name`, verified as rmserve verifies it (files, manifest, tokenizer)."""
    return verify_version(version_dirs(repository, name)[0])


def session(model: VerifiedVersion, intra_op_threads: int = 0) -> ort.InferenceSession:
    """An InferenceSession with default options (0 threads = ONNX Runtime's choice, the cores) unless told."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    return ort.InferenceSession(str(model.model_path), options, providers=["CPUExecutionProvider"])


def raw_scores(
    model: VerifiedVersion, onnx: ort.InferenceSession, prompts: Sequence[str], responses: Sequence[str]
) -> np.ndarray:
    """Tokenize in the model's input format (rmserve's own code), pad, run: [items] raw scores."""
    input_ids, attention_mask = pad_batch(
        [encoding.input_ids for encoding in model.format.encode_texts(prompts, responses)], model.manifest.tokens.pad_id
    )
    # The score is the first output; a graph may export its pooled embedding as a second one, which
    # the baselines have no use for (they raise no out-of-distribution flag), so they never fetch it.
    score_output = onnx.get_outputs()[0].name
    (raw,) = onnx.run([score_output], {"input_ids": input_ids, "attention_mask": attention_mask})
    return np.asarray(raw, dtype=np.float64).reshape(len(input_ids))
