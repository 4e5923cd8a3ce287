"""A tiny real reward model for tests: a locally trained tokenizer and a hand-built ONNX graph.

The graph scores a sequence as the mean of per-token weights over unmasked positions, so
scores depend on the text, ignore padding, and are cheap to compute by hand in numpy. Its
embedding variant also outputs the mean of per-token vectors (`embedding`, [batch, width]).
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from rmserve.core.embedding import EMBEDDING_FILE, EMBEDDING_OUTPUT, EmbeddingGaussian
from rmserve.core.ensemble_spec import EnsembleSpec
from rmserve.core.manifest import (
    MODEL_FILE,
    TOKENIZER_FILE,
    EmbeddingStats,
    Evaluation,
    Manifest,
    Normalization,
    Quantiles,
    TrainingStats,
    file_digests,
    sha256_of,
)
from rmserve.core.tokenizer import PairEncoder, SpecialTokens
from rmserve.core.transcript import Transcript

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
TOKENS = SpecialTokens(pad_id=0, bos_id=2, sep_id=3, eos_id=3)
CORPUS = [
    "How do I bake bread? Mix flour, water, yeast and salt, knead, let it rise, bake at 230C.",
    "Human: What is the capital of France? Assistant: Paris is the capital of France.",
    "I'm sorry, I can't help with that. Please ask something else.",
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Reward models score responses; RL trainers query them millions of times.",
]


def train_tokenizer(corpus: list[str] = CORPUS, vocab_size: int = 400, special: list[str] = SPECIAL) -> Tokenizer:
    """Byte-level BPE on `corpus`; `special` are the first ids, the second of them the unknown token."""
    tokenizer = Tokenizer(models.BPE(unk_token=special[1]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(corpus, trainer)
    return tokenizer


def token_weights(vocab_size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 1.0, size=vocab_size).astype(np.float32)


def token_vectors(vocab_size: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed + 1).normal(0.0, 1.0, size=(vocab_size, width)).astype(np.float32)


def mean_weight_graph(weights: np.ndarray, vectors: np.ndarray | None = None) -> onnx.ModelProto:
    """score[b] = sum_s(w[ids[b, s]] * mask[b, s]) / sum_s(mask[b, s]); with `vectors` [vocab, width]
    a second output, embedding[b] = sum_s(v[ids[b, s]] * mask[b, s]) / sum_s(mask[b, s])."""
    nodes = [
        helper.make_node("Gather", ["weights", "input_ids"], ["token_scores"]),  # [batch, seq]
        helper.make_node("Cast", ["attention_mask"], ["mask"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["token_scores", "mask"], ["kept"]),
        helper.make_node("ReduceSum", ["kept", "axis"], ["total"], keepdims=0),  # [batch]
        helper.make_node("ReduceSum", ["mask", "axis"], ["count"], keepdims=0),
        helper.make_node("Div", ["total", "count"], ["score"]),
    ]
    outputs = [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch"])]
    initializers = [
        numpy_helper.from_array(weights, "weights"),
        numpy_helper.from_array(np.array([1], np.int64), "axis"),
    ]
    if vectors is not None:
        nodes += [
            helper.make_node("Gather", ["vectors", "input_ids"], ["token_vectors"]),  # [batch, seq, width]
            helper.make_node("Unsqueeze", ["mask", "last"], ["mask_3d"]),  # [batch, seq, 1]
            helper.make_node("Mul", ["token_vectors", "mask_3d"], ["kept_vectors"]),
            helper.make_node("ReduceSum", ["kept_vectors", "axis"], ["vector_total"], keepdims=0),  # [batch, width]
            helper.make_node("Unsqueeze", ["count", "axis"], ["count_2d"]),  # [batch, 1]
            helper.make_node("Div", ["vector_total", "count_2d"], [EMBEDDING_OUTPUT]),
        ]
        outputs.append(helper.make_tensor_value_info(EMBEDDING_OUTPUT, TensorProto.FLOAT, ["batch", vectors.shape[1]]))
        initializers += [
            numpy_helper.from_array(vectors, "vectors"),
            numpy_helper.from_array(np.array([2], np.int64), "last"),
        ]
    graph = helper.make_graph(
        nodes,
        "mean_token_weight",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]),
        ],
        outputs,
        initializers,
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
        input_format=Transcript().to_manifest(),
        tokens=TOKENS,
        normalization=Normalization(mean=mean, std=std),
        evaluation=Evaluation(pairwise_accuracy=None, n=0),
        files=file_digests(directory),
    )
    manifest.write(directory)
    return manifest


# Members of the tests' ensemble: (name, weight seed, normalization mean, std); each normalizes differently.
ENSEMBLE_MEMBERS = (("tiny-a", 0, 0.5, 2.0), ("tiny-b", 1, 0.0, 1.0), ("tiny-c", 2, -0.2, 0.5))
ENSEMBLE = "tiny-ensemble"


def calibration_pairs() -> list[dict[str, str]]:
    """Preference pairs written like the tokenizer's corpus: its sentences, their halves and their ends."""
    texts = [piece for sentence in CORPUS for piece in (sentence, sentence[: len(sentence) // 2], sentence[-30:])]
    return [
        {"prompt": "How do I bake bread?", "chosen": chosen, "rejected": rejected}
        for chosen, rejected in zip(texts, texts[1:] + texts[:1], strict=True)
    ]


def write_ensemble(repository: Path, calibration: Path, held_out: Path | None = None) -> EnsembleSpec:
    """The three members and `tiny-ensemble` of them, as `rmserve ensemble` writes it (calibrated on `calibration`)."""
    from rmserve.training.ensemble_build import build_ensemble

    for name, seed, mean, std in ENSEMBLE_MEMBERS:
        write_version(repository / name / "1", name=name, seed=seed, mean=mean, std=std)
    calibration.write_text("".join(json.dumps(pair) + "\n" for pair in calibration_pairs()), encoding="utf-8")
    members = [name for name, *_ in ENSEMBLE_MEMBERS]
    evaluation = None if held_out is None else (held_out, None)
    return build_ensemble(repository, ENSEMBLE, members, 1.0, "conservative", (calibration, None), evaluation)


def reseal(directory: Path, manifest: Manifest) -> Manifest:
    """Record the digests again after a test replaced a file of the version, as an export would."""
    sealed = manifest.model_copy(update={"sha256": sha256_of(directory / MODEL_FILE), "files": file_digests(directory)})
    sealed.write(directory)
    return sealed


def expected_raw_scores(directory: Path, input_ids: list[list[int]], seed: int = 0) -> list[float]:
    """What the graph must return, computed independently in numpy."""
    vocab_size = Tokenizer.from_file(str(directory / TOKENIZER_FILE)).get_vocab_size()
    weights = token_weights(vocab_size, seed)
    return [float(weights[ids].mean()) for ids in input_ids]


def dense_stack_graph(vocab_size: int, layers: int, width: int) -> onnx.ModelProto:
    """A deliberately slow scorer: `layers` dense layers over token embeddings, then their mean."""
    rng = np.random.default_rng(0)
    embeddings = rng.normal(0, 1, size=(vocab_size, width)).astype(np.float32)
    dense = (rng.normal(0, 1, size=(width, width)) / np.sqrt(width)).astype(np.float32)
    nodes = [helper.make_node("Gather", ["embeddings", "input_ids"], ["hidden_0"])]  # [batch, seq, width]
    for layer in range(layers):
        nodes.append(helper.make_node("MatMul", [f"hidden_{layer}", "dense"], [f"linear_{layer}"]))
        nodes.append(helper.make_node("Tanh", [f"linear_{layer}"], [f"hidden_{layer + 1}"]))
    # [batch, seq, width] -> [batch]; padding counts too: only this model's speed matters.
    nodes.append(helper.make_node("ReduceMean", [f"hidden_{layers}"], ["score"], axes=[1, 2], keepdims=0))
    graph = helper.make_graph(
        nodes,
        "slow_dense_stack",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]),
        ],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch"])],
        [numpy_helper.from_array(embeddings, "embeddings"), numpy_helper.from_array(dense, "dense")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def write_slow_version(directory: Path, name: str, layers: int, width: int) -> Manifest:
    """A valid version whose graph takes real time per call (`dense_stack_graph`)."""
    manifest = write_version(directory, name=name)
    vocab_size = Tokenizer.from_file(str(directory / TOKENIZER_FILE)).get_vocab_size()
    onnx.save(dense_stack_graph(vocab_size, layers, width), str(directory / MODEL_FILE))
    return reseal(directory, manifest)


def expected_embeddings(directory: Path, input_ids: list[list[int]], width: int, seed: int = 0) -> np.ndarray:
    """What the embedding graph's second output must be [items, width], computed independently in numpy."""
    vocab_size = Tokenizer.from_file(str(directory / TOKENIZER_FILE)).get_vocab_size()
    vectors = token_vectors(vocab_size, width, seed)
    return np.array([vectors[ids].astype(np.float64).mean(axis=0) for ids in input_ids])


def write_version_with_stats(
    directory: Path, prompts: list[str], responses: list[str], embedding_width: int | None = None, **options: object
) -> Manifest:
    """A tiny version whose manifest has training statistics of these (formatted) training pairs.

    The statistics are what `rmserve export` stores: raw-score and response-length quantiles of
    the served graph on its training responses, here computed by hand in numpy; with
    `embedding_width`, the graph also has an embedding output and the version its Gaussian.
    """
    manifest = write_version(directory, **options)  # type: ignore[arg-type]
    encoder = PairEncoder(Tokenizer.from_file(str(directory / TOKENIZER_FILE)), manifest.max_length, manifest.tokens)
    encodings = encoder.encode(prompts, responses)
    seed = int(manifest.architecture["seed"])
    sequences = [encoding.input_ids for encoding in encodings]
    raw = expected_raw_scores(directory, sequences, seed)
    embedding = None
    if embedding_width is not None:
        vocab_size = Tokenizer.from_file(str(directory / TOKENIZER_FILE)).get_vocab_size()
        graph = mean_weight_graph(token_weights(vocab_size, seed), token_vectors(vocab_size, embedding_width, seed))
        onnx.save(graph, str(directory / MODEL_FILE))
        embeddings = expected_embeddings(directory, sequences, embedding_width, seed)
        gaussian = EmbeddingGaussian.fit(embeddings)
        gaussian.save(directory / EMBEDDING_FILE)
        distances = gaussian.distances(embeddings).tolist()
        embedding = EmbeddingStats(dim=gaussian.dim, rank=gaussian.rank, distance=Quantiles.of(distances))
    stats = TrainingStats(
        responses=len(raw),
        raw_score=Quantiles.of(raw),
        response_tokens=Quantiles.of([float(encoding.response_tokens) for encoding in encodings]),
        data="tiny corpus",
        embedding=embedding,
    )
    return reseal(directory, manifest.model_copy(update={"training_stats": stats}))
