"""`rmserve import`: a Hugging Face reward model on disk -> a model repository version, nothing trained.

In order: load the checkpoint (a one-label `AutoModelForSequenceClassification`, encoder or
decoder) and its fast tokenizer; take the input format from the tokenizer config (its chat
template, else its pair template); trace the network to ONNX (dynamic batch and sequence,
external data past 2 GB); encode the calibration items through the same format serving uses
and check the served graph against transformers' own forward pass, one unpadded item at a
time, while ONNX scores them in padded batches of mixed lengths (where padding side and
last-token pooling go wrong), the embedding output (what the head reads) likewise; optionally
quantize to int8 and measure its agreement; set normalization and the flags' statistics (with the
embedding's Gaussian, embedding_stats.npz) from the calibration responses; write tokenizer,
manifest and sha256 of every file.
"""

from __future__ import annotations

import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from rmserve.core.conversation import Turn
from rmserve.core.formats import InputFormat, load_format, pair_prompt
from rmserve.core.manifest import MODEL_FILE, TOKENIZER_FILE, Manifest, Normalization, file_digests, sha256_of
from rmserve.core.tokenizer import SpecialTokens
from rmserve.engine.session import OnnxScorer
from rmserve.training.checkpoint import HFReward
from rmserve.training.data import Comparison, read_comparisons
from rmserve.training.evaluate import (
    EncodedComparison,
    encode_comparisons,
    pairwise_accuracy,
    ranking_agreement,
    score_comparisons,
)
from rmserve.training.export import export_onnx, quantize_int8
from rmserve.training.options import ImportConfig
from rmserve.training.stats import measure_training, score_and_embed_sequences

EXTERNAL_DATA_FILE = "model.onnx.data"
ONNX_THREADS = 2
# Without a calibration file: a few conversations of very different lengths, for parity only.
PROBES = [
    Comparison((Turn("user", "hi"),), ("Hello! How can I help?", "no")),
    Comparison(
        (Turn("user", "How do I bake bread?"), Turn("assistant", "Do you have yeast?"), Turn("user", "yes")),
        ("Mix flour, water, yeast and salt, knead, let it rise, then bake at 230C.", "Buy some."),
    ),
    Comparison((Turn("user", "What is the capital of France?"),), ("Paris.", "France has no capital. " * 8)),
]


class CheckpointError(ValueError):
    """A checkpoint that cannot be imported as it is; the message says what to change."""


def import_checkpoint(config: ImportConfig) -> Manifest:
    from transformers import AutoTokenizer

    hf_tokenizer = AutoTokenizer.from_pretrained(config.checkpoint)
    if not hf_tokenizer.is_fast:
        raise CheckpointError(f"{config.checkpoint}: needs a fast tokenizer (tokenizer.json) so serving can load it")
    classifier = load_classifier(config.checkpoint, hf_tokenizer.pad_token_id)
    max_length = _max_length(config, classifier, hf_tokenizer)
    spec = format_spec(hf_tokenizer)
    special = SpecialTokens(pad_id=classifier.config.pad_token_id, bos_id=None, sep_id=None, eos_id=None)
    input_format = load_format(spec, hf_tokenizer.backend_tokenizer, max_length, special)
    separator = segment_separator(classifier, hf_tokenizer)
    network = (HFReward(classifier) if separator is None else SegmentedReward(classifier, separator)).eval()

    comparisons = (
        read_comparisons(config.calibration, config.calibration_lines, input_format.layouts)
        if config.calibration
        else PROBES
    )
    encoded = encode_comparisons(input_format, comparisons)
    version_dir = config.repository / config.name / str(config.version)
    if version_dir.exists():
        raise CheckpointError(f"{version_dir} already exists; pick another --version")
    version_dir.mkdir(parents=True)
    try:
        parity = _write_graph(config, network, encoded, special.pad_id, version_dir)
        served = OnnxScorer(version_dir / MODEL_FILE, ONNX_THREADS)
        served_scores = score_comparisons(served, encoded, special.pad_id)
        parity["tokenization_matches_transformers"] = tokenization_agreement(
            input_format, hf_tokenizer, comparisons, spec
        )
        hf_tokenizer.backend_tokenizer.save(str(version_dir / TOKENIZER_FILE))
        normalization, training_stats = Normalization(), None
        if config.calibration:  # the flags' cuts and normalization from the calibration responses
            normalization, training_stats = measure_training(
                served, input_format, comparisons, special.pad_id, version_dir, _describe(config)
            )
        manifest = Manifest(
            name=config.name,
            version=config.version,
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            sha256=sha256_of(version_dir / MODEL_FILE),
            architecture={
                "type": "hf-sequence-classification",
                "model_type": classifier.config.model_type,
                "architectures": list(classifier.config.architectures or []),
                "parameters": sum(parameter.numel() for parameter in classifier.parameters()),
                "segment_ids": "none" if separator is None else f"in the graph: 1 after the first id {separator}",
            },
            max_length=max_length,
            input_format=spec,
            tokens=special,
            normalization=normalization,
            quantization="int8-dynamic" if config.int8 else None,
            parity=parity,
            source={
                "checkpoint": str(config.checkpoint),
                "calibration": _describe(config),
                "calibration_pairwise_accuracy": pairwise_accuracy(served_scores),
                "calibration_comparisons": len(comparisons),
                "normalization": "calibration responses" if config.calibration else "none (no --calibration)",
            },
            files=file_digests(version_dir),
            training_stats=training_stats,
        )
        manifest.write(version_dir)
    except BaseException:
        shutil.rmtree(version_dir)  # a half-written version must never be served
        raise
    return manifest


def load_classifier(checkpoint: Path, tokenizer_pad_id: int | None) -> torch.nn.Module:
    """The checkpoint's one-label classifier in eval mode, with the pad id its last-token pooling needs."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    hf_config = AutoConfig.from_pretrained(checkpoint)
    if hf_config.num_labels != 1:
        raise CheckpointError(f"{checkpoint}: has {hf_config.num_labels} labels; a reward model has one")
    classifier = AutoModelForSequenceClassification.from_pretrained(
        checkpoint, attn_implementation="eager", dtype=torch.float32
    )
    if classifier.config.pad_token_id is None:
        if tokenizer_pad_id is None:
            raise CheckpointError(
                f"{checkpoint}: neither the model config nor the tokenizer names a pad token; set pad_token_id in "
                "config.json to the id the model was trained with (decoders read the score at the last non-pad token)"
            )
        classifier.config.pad_token_id = tokenizer_pad_id
    return classifier.eval()


def format_spec(hf_tokenizer: Any) -> dict[str, Any]:
    """The input format the checkpoint's tokenizer config implies: its chat template, else its pair template."""
    template = hf_tokenizer.chat_template
    if isinstance(template, dict):  # named templates: the default one
        template = template.get("default")
    if template:
        special_tokens = {name: str(token) for name, token in hf_tokenizer.special_tokens_map.items()}
        return {"style": "chat_template", "template": template, "special_tokens": special_tokens}
    return {"style": "pair"}


def _max_length(config: ImportConfig, classifier: torch.nn.Module, hf_tokenizer: Any) -> int:
    limits = [config.max_length, getattr(classifier.config, "max_position_embeddings", config.max_length)]
    if isinstance(hf_tokenizer.model_max_length, int) and hf_tokenizer.model_max_length < 10**9:
        limits.append(hf_tokenizer.model_max_length)
    return int(min(limits))


class SegmentedReward(HFReward):
    """A BERT-style pair model whose segment ids the graph derives itself: 1 after the first [SEP], else 0.

    Serving sends input_ids and attention_mask only (the repository contract), so `[CLS] a [SEP] b [SEP]` gets the
    token_type_ids `0 0 0 1 1` its tokenizer would give, computed from the ids.
    """

    def __init__(self, classifier: torch.nn.Module, separator: int):
        super().__init__(classifier)
        self.separator = separator

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.classifier(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=segments(input_ids, self.separator)
        ).logits


def segments(input_ids: torch.Tensor, separator: int) -> torch.Tensor:
    """[batch, seq] ids -> [batch, seq] segment ids: how many separators come strictly before, capped at 1."""
    is_separator = (input_ids == separator).long()
    return (torch.cumsum(is_separator, dim=1) - is_separator).clamp(max=1)


def segment_separator(classifier: torch.nn.Module, hf_tokenizer: Any) -> int | None:
    """The [SEP] id when the model reads segment ids from its pair template, after checking the rule above."""
    probe = hf_tokenizer("How do I bake bread?", "Knead it.", return_token_type_ids=True)
    if getattr(classifier.config, "type_vocab_size", 0) <= 1 or not any(probe["token_type_ids"]):
        return None
    separator = hf_tokenizer.sep_token_id
    derived = None if separator is None else segments(torch.tensor([probe["input_ids"]]), separator)[0].tolist()
    if derived != list(probe["token_type_ids"]):
        raise CheckpointError(
            "the model reads token_type_ids, and its pair template's segments are not `1 after the first [SEP]`; "
            "rmserve serves input_ids and attention_mask only, so this checkpoint would be scored wrong"
        )
    return int(separator)


def _write_graph(
    config: ImportConfig, network: HFReward, encoded: list[EncodedComparison], pad_id: int, version_dir: Path
) -> dict[str, Any]:
    """Export, compare with transformers, optionally quantize; the served graph ends up in `version_dir`."""
    with tempfile.TemporaryDirectory() as scratch:
        fp32_path = Path(scratch) / MODEL_FILE
        export_onnx(network, fp32_path)
        reference, reference_embeddings = _reference(network, encoded)
        fp32 = OnnxScorer(fp32_path, ONNX_THREADS)
        fp32_scores = score_comparisons(fp32, encoded, pad_id)
        _, fp32_embeddings = score_and_embed_sequences(fp32, [ids for group in encoded for ids in group], pad_id)
        parity: dict[str, Any] = {
            "data": _describe(config),
            "items": sum(len(group) for group in encoded),
            "reference": "transformers forward, one unpadded item at a time; ONNX in padded batches",
            "max_abs_diff": _max_diff(reference, fp32_scores),
            "ranking_agreement": ranking_agreement(reference, fp32_scores),
            "embedding_max_abs_diff": float(np.max(np.abs(reference_embeddings - fp32_embeddings))),
        }
        served_path = fp32_path
        if config.int8:
            served_path = Path(scratch) / "model.int8.onnx"
            quantize_int8(fp32_path, served_path)
            int8_scores = score_comparisons(OnnxScorer(served_path, ONNX_THREADS), encoded, pad_id)
            parity["int8_agreement_with_fp32"] = ranking_agreement(fp32_scores, int8_scores)
            parity["int8_max_abs_diff"] = _max_diff(fp32_scores, int8_scores)
        save_graph(onnx.load(str(served_path)), version_dir, config.external_data_above)
    return parity


def save_graph(graph: onnx.ModelProto, version_dir: Path, external_data_above: int) -> None:
    """model.onnx, its weights in model.onnx.data when they would pass `external_data_above` bytes (protobuf: 2 GB)."""
    weights = sum(tensor.ByteSize() for tensor in graph.graph.initializer)
    if weights <= external_data_above:
        onnx.save_model(graph, str(version_dir / MODEL_FILE))
        return
    onnx.save_model(
        graph,
        str(version_dir / MODEL_FILE),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=EXTERNAL_DATA_FILE,
        size_threshold=1024,
    )


def _reference(network: HFReward, encoded: list[EncodedComparison]) -> tuple[list[np.ndarray], np.ndarray]:
    """transformers' forward pass on each item alone (no padding, so nothing for pooling to get wrong):
    scores per comparison, and the embeddings [items, hidden] its head read."""
    scores, embeddings = [], []
    with torch.no_grad():
        for group in encoded:
            group_scores = []
            for ids in group:
                score, embedding = network.score_and_embedding(
                    torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long)
                )
                group_scores.append(float(score))
                embeddings.append(embedding[0].numpy())
            scores.append(np.array(group_scores))
    return scores, np.array(embeddings)


def tokenization_agreement(
    input_format: InputFormat, hf_tokenizer: Any, comparisons: list[Comparison], spec: dict[str, Any]
) -> float:
    """Share of untruncated calibration items whose tokens equal transformers' own (apply_chat_template / pair)."""
    same, total = 0, 0
    for comparison in comparisons:
        for response, encoding in zip(comparison.responses, input_format.encode(comparison.exchanges()), strict=True):
            if encoding.truncated:
                continue
            if spec["style"] == "chat_template":
                messages = [{"role": t.role, "content": t.content} for t in comparison.prompt]
                messages.append({"role": "assistant", "content": response})
                expected = hf_tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
            else:
                expected = hf_tokenizer(pair_prompt(comparison.prompt), response)["input_ids"]
            same += list(expected) == encoding.input_ids
            total += 1
    return same / total if total else 1.0


def _max_diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return float(max(np.max(np.abs(x - y)) for x, y in zip(a, b, strict=True)))


def _describe(config: ImportConfig) -> str:
    if config.calibration is None:
        return "built-in probe conversations"
    return config.calibration.name + (f" lines {config.calibration_lines}" if config.calibration_lines else "")
