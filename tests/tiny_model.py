"""A tiny real reward model for tests: a locally trained tokenizer and a hand-built ONNX graph.

The graph scores a sequence as the mean of per-token weights over unmasked positions, so
scores depend on the text, ignore padding, and are cheap to compute by hand in numpy.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from rmserve.core.formats import InputFormat
from rmserve.core.manifest import MODEL_FILE, TOKENIZER_FILE, Manifest, Quantiles, TrainingStats, sha256_of
from rmserve.core.tokenizer import PairEncoder, SpecialTokens

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
TOKENS = SpecialTokens(pad_id=0, bos_id=2, sep_id=3, eos_id=3)
CORPUS = [
    "How do I bake bread? Mix flour, water, yeast and salt, knead, let it rise, bake at 230C.",
    "Human: What is the capital of France? Assistant: Paris is the capital of France.",
    "I'm sorry, I can't help with that. Please ask something else.",
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Reward models score responses; RL trainers query them millions of times.",
]


def train_tokenizer(corpus: list[str] = CORPUS, vocab_size: int = 400) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(corpus, trainer)
    return tokenizer


def token_weights(vocab_size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 1.0, size=vocab_size).astype(np.float32)


def mean_weight_graph(weights: np.ndarray) -> onnx.ModelProto:
    """score[b] = sum_s(w[ids[b, s]] * mask[b, s]) / sum_s(mask[b, s])."""
    nodes = [
        helper.make_node("Gather", ["weights", "input_ids"], ["token_scores"]),  # [batch, seq]
        helper.make_node("Cast", ["attention_mask"], ["mask"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["token_scores", "mask"], ["kept"]),
        helper.make_node("ReduceSum", ["kept", "axis"], ["total"], keepdims=0),  # [batch]
        helper.make_node("ReduceSum", ["mask", "axis"], ["count"], keepdims=0),
        helper.make_node("Div", ["total", "count"], ["score"]),
    ]
    graph = helper.make_graph(
        nodes,
        "mean_token_weight",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]),
        ],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch"])],
        [numpy_helper.from_array(weights, "weights"), numpy_helper.from_array(np.array([1], dtype=np.int64), "axis")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def write_version(
    directory: Path,
    name: str = "tiny",
    version: int = 1,
    max_length: int = 64,
    seed: int = 0,
    mean: float = 0.5,
    std: float = 2.0,
) -> Manifest:
    """Write a complete, valid model version directory and return its manifest."""
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer()
    tokenizer.save(str(directory / TOKENIZER_FILE))
    onnx.save(mean_weight_graph(token_weights(tokenizer.get_vocab_size(), seed)), str(directory / MODEL_FILE))
    manifest = Manifest(
        name=name,
        version=version,
        created=datetime.datetime.now(datetime.UTC).isoformat(),
        sha256=sha256_of(directory / MODEL_FILE),
        architecture={"type": "mean-token-weight", "seed": seed},
        max_length=max_length,
        input_format=InputFormat().to_manifest(),
        tokens=TOKENS,
        normalization={"mean": mean, "std": std},
        evaluation={"pairwise_accuracy": None, "n": 0},
    )
    manifest.write(directory)
    return manifest


def expected_raw_scores(directory: Path, input_ids: list[list[int]], seed: int = 0) -> list[float]:
    """What the graph must return, computed independently in numpy."""
    vocab_size = Tokenizer.from_file(str(directory / TOKENIZER_FILE)).get_vocab_size()
    weights = token_weights(vocab_size, seed)
    return [float(weights[ids].mean()) for ids in input_ids]


def write_version_with_stats(directory: Path, prompts: list[str], responses: list[str], **options: object) -> Manifest:
    """A tiny version whose manifest has training statistics of these (formatted) training pairs.

    The statistics are what `rmserve export` stores: raw-score and response-length quantiles of
    the served graph on its training responses, here computed by hand in numpy.
    """
    manifest = write_version(directory, **options)  # type: ignore[arg-type]
    encoder = PairEncoder.from_file(directory / TOKENIZER_FILE, manifest.max_length, manifest.tokens)
    encodings = encoder.encode(prompts, responses)
    seed = int(manifest.architecture["seed"])
    raw = expected_raw_scores(directory, [encoding.input_ids for encoding in encodings], seed)
    stats = TrainingStats(
        responses=len(raw),
        raw_score=Quantiles.of(raw),
        response_tokens=Quantiles.of([float(encoding.response_tokens) for encoding in encodings]),
        data="tiny corpus",
    )
    with_stats = manifest.model_copy(update={"training_stats": stats})
    with_stats.write(directory)
    return with_stats
