"""A reward model that likes length, built by hand for the length-gaming drift scenario.

Reward models trained on helpfulness data pay for length almost whatever the words say (Singhal
et al. 2023, "A Long Way to Go: Investigating Length Correlations in RLHF"). This one does so by
construction, on hh-harmless's tokenizer and input format; its graph scores each item as

    raw = LENGTH_WEIGHT * n + (sum of the response tokens' weights) / (n + PRIOR_TOKENS)

with n the response's tokens and random token weights: every token pays, and the words move the
score too, a short answer's words less (its mean weight is shrunk towards 0). On the training
responses its length-score rank correlation is about +0.45. It was never trained and ranks nothing
well (its manifest says so). Its normalization and training statistics are honest: computed by
`rmserve.training.stats`, as for any served version, by scoring every response of the training
lines with this graph, so its flags cut where real responses lie.
"""

from __future__ import annotations

import datetime
import shutil
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from tokenizers import Tokenizer

from rmserve.core.manifest import (
    MODEL_FILE,
    TOKENIZER_FILE,
    Evaluation,
    Manifest,
    TrainingRecord,
    file_digests,
    sha256_of,
)
from rmserve.core.repository import verify_version
from rmserve.core.tokenizer import SpecialTokens
from rmserve.engine.session import OnnxScorer
from rmserve.training.data import LineRange, read_comparisons
from rmserve.training.evaluate import encode_comparisons, score_comparisons
from rmserve.training.stats import add_training_stats, normalization_of

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER_SOURCE = ROOT / "models" / "hh-harmless" / "1"  # its tokenizer and input format
NAME = "length-loving"
LENGTH_WEIGHT = 0.002  # raw score per response token
PRIOR_TOKENS = 8.0  # the token weights' mean is shrunk as if every response had 8 more tokens of weight 0
MAX_LENGTH = 1024  # room for padded answers: the graph sees their whole length
SEED = 0


def length_loving_graph(token_weights: np.ndarray, tokens: SpecialTokens) -> onnx.ModelProto:
    """raw[b] = LENGTH_WEIGHT * n[b] + sum_s(w[ids[b, s]] * r[b, s]) / (n[b] + PRIOR_TOKENS).

    r marks the response's tokens (after the first separator, before the end token, unpadded) and
    n[b] = sum_s r[b, s] counts them.
    """
    assert tokens.sep_id is not None and tokens.eos_id is not None
    nodes = [
        helper.make_node("Equal", ["input_ids", "sep_id"], ["is_sep"]),  # [batch, seq]
        helper.make_node("Equal", ["input_ids", "eos_id"], ["is_eos"]),
        helper.make_node("Cast", ["is_sep"], ["sep_count"], to=TensorProto.FLOAT),
        helper.make_node("CumSum", ["sep_count", "axis"], ["seps_so_far"]),
        helper.make_node("Equal", ["seps_so_far", "one"], ["after_first_sep"]),
        helper.make_node("Or", ["is_sep", "is_eos"], ["is_marker"]),
        helper.make_node("Not", ["is_marker"], ["is_text"]),
        helper.make_node("Cast", ["attention_mask"], ["is_real"], to=TensorProto.BOOL),
        helper.make_node("And", ["after_first_sep", "is_text"], ["in_response_text"]),
        helper.make_node("And", ["in_response_text", "is_real"], ["in_response"]),
        helper.make_node("Cast", ["in_response"], ["response_mask"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["response_mask", "axes"], ["response_tokens"], keepdims=0),  # [batch]
        helper.make_node("Gather", ["token_weights", "input_ids"], ["token_scores"]),  # [batch, seq]
        helper.make_node("Mul", ["token_scores", "response_mask"], ["kept"]),
        helper.make_node("ReduceSum", ["kept", "axes"], ["content_total"], keepdims=0),
        helper.make_node("Add", ["response_tokens", "prior_tokens"], ["divisor"]),
        helper.make_node("Div", ["content_total", "divisor"], ["content"]),
        helper.make_node("Mul", ["response_tokens", "length_weight"], ["length_score"]),
        helper.make_node("Add", ["length_score", "content"], ["score"]),
    ]
    constants = {
        "token_weights": token_weights.astype(np.float32),
        "sep_id": np.array(tokens.sep_id, dtype=np.int64),
        "eos_id": np.array(tokens.eos_id, dtype=np.int64),
        "axis": np.array(1, dtype=np.int64),  # CumSum's, a scalar
        "axes": np.array([1], dtype=np.int64),  # ReduceSum's, a vector
        "one": np.array(1.0, dtype=np.float32),
        "length_weight": np.array(LENGTH_WEIGHT, dtype=np.float32),
        "prior_tokens": np.array(PRIOR_TOKENS, dtype=np.float32),
    }
    graph = helper.make_graph(
        nodes,
        "length_loving",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]),
        ],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch"])],
        [numpy_helper.from_array(value, name) for name, value in constants.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def write_length_loving_version(repository: Path, data: Path, lines: LineRange) -> Manifest:
    """`<repository>/length-loving/1`, its flag cuts from scoring the responses of `data`'s `lines`."""
    directory = repository / NAME / "1"
    directory.mkdir(parents=True, exist_ok=True)
    source = Manifest.read(TOKENIZER_SOURCE)
    shutil.copyfile(TOKENIZER_SOURCE / TOKENIZER_FILE, directory / TOKENIZER_FILE)
    vocab_size = Tokenizer.from_file(str(directory / TOKENIZER_FILE)).get_vocab_size()
    weights = np.random.default_rng(SEED).normal(0.0, 1.0, size=vocab_size)
    onnx.save(length_loving_graph(weights, source.tokens), str(directory / MODEL_FILE))
    unscored = Manifest(
        name=NAME,
        version=1,
        created=datetime.datetime.now(datetime.UTC).isoformat(),
        sha256=sha256_of(directory / MODEL_FILE),
        architecture={
            "type": "hand-built length-loving scorer (not trained)",
            "formula": f"{LENGTH_WEIGHT} * n + (sum of the response's token weights) / (n + {PRIOR_TOKENS:g}), "
            "n = response tokens",
            "token_weights": f"normal(0, 1), seed {SEED}",
            "tokenizer": "hh-harmless v1's",
            "purpose": "the length-gaming drift scenario (bench/drift.py): it likes length as "
            "helpfulness reward models do (Singhal et al. 2023)",
        },
        max_length=MAX_LENGTH,
        input_format=source.input_format,
        tokens=source.tokens,
        evaluation=Evaluation(),  # not evaluated: it was never meant to rank well
        training=TrainingRecord.model_validate(
            {"data": str(data), "lines": f"{lines.first}-{lines.last}", "trained": False}  # `trained`: an extra field
        ),
        files=file_digests(directory),
    )
    unscored.write(directory)
    # Normalized on the training responses' raw scores; add_training_stats scores them again, checks the
    # normalization reproduces, and adds the statistics, as for any version exported before they existed.
    input_format = verify_version(directory).format
    encoded = encode_comparisons(input_format, read_comparisons(data, lines, input_format.layouts))
    raw = np.concatenate(score_comparisons(OnnxScorer(directory / MODEL_FILE, 1), encoded, source.tokens.pad_id))
    unscored.model_copy(update={"normalization": normalization_of(raw)}).write(directory)
    return add_training_stats(directory)
