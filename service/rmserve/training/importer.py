"""`rmserve import`: a Hugging Face reward model on disk -> a model repository version, nothing trained.

Load the checkpoint (a one-label `AutoModelForSequenceClassification`, encoder or decoder) and
its fast tokenizer, from the local path only; take the input format from the tokenizer config (its
chat template, else its pair template); then publish through `rmserve.training.publish`: the
traced graph (external data past 2 GB) must reproduce transformers' own forward pass, run one
unpadded item at a time while ONNX scores the calibration items in padded batches of mixed lengths
(where padding side and last-token pooling go wrong), the embedding output (what the head reads)
likewise; normalization and the flags' statistics come from the calibration responses.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from rmserve.core.conversation import Turn
from rmserve.core.formats import InputFormat, load_format, pair_prompt
from rmserve.core.manifest import TOKENIZER_FILE, ImportSource, Manifest
from rmserve.core.tokenizer import SpecialTokens
from rmserve.training.checkpoint import RewardNetwork
from rmserve.training.checkpoint_formats import load_reward_checkpoint
from rmserve.training.data import Comparison, read_comparisons
from rmserve.training.evaluate import EncodedComparison, encode_comparisons, pairwise_accuracy
from rmserve.training.export import traced
from rmserve.training.options import ImportConfig
from rmserve.training.parity import Reference
from rmserve.training.publish import Measured, Probes, Publication, Responses, claim_version, data_label, publish

if TYPE_CHECKING:
    from transformers import PreTrainedModel

# Without a calibration file: a few conversations of very different lengths, for parity only.
PROBES = [
    Comparison((Turn("user", "hi"),), ("Hello! How can I help?", "no")),
    Comparison(
        (Turn("user", "How do I bake bread?"), Turn("assistant", "Do you have yeast?"), Turn("user", "yes")),
        ("Mix flour, water, yeast and salt, knead, let it rise, then bake at 230C.", "Buy some."),
    ),
    Comparison((Turn("user", "What is the capital of France?"),), ("Paris.", "France has no capital. " * 8)),
]


def import_checkpoint(config: ImportConfig) -> Manifest:
    """Publish a local checkpoint as `<repository>/<name>/<version>`, scoring as transformers does."""
    target = claim_version(config.repository, config.name, config.version)
    checkpoint = load_reward_checkpoint(config)  # the format its library saved: rmserve.training.checkpoint_formats
    hf_tokenizer, classifier = checkpoint.tokenizer, checkpoint.model
    max_length = _max_length(config, classifier, hf_tokenizer)
    spec = format_spec(hf_tokenizer)
    special = SpecialTokens(pad_id=classifier.config.pad_token_id, bos_id=None, sep_id=None, eos_id=None)
    input_format = load_format(spec, hf_tokenizer.backend_tokenizer, max_length, special)
    network = checkpoint.network(pair_segments=spec["style"] == "pair")

    comparisons = (
        read_comparisons(config.calibration, config.calibration_lines, input_format.layouts)
        if config.calibration
        else PROBES
    )
    data = _describe(config)
    probes = Probes(encode_comparisons(input_format, comparisons), special.pad_id, data)
    scores, embeddings = _reference(network, probes.encoded)
    reference = Reference(
        "transformers forward, one unpadded item at a time; ONNX in padded batches",
        scores,
        embeddings,
        tokenization_agreement(input_format, hf_tokenizer, comparisons, spec),
    )

    def describe(measured: Measured) -> Manifest:
        separator = getattr(network, "separator", None)
        architecture = {
            "type": "hf-sequence-classification",
            "model_type": classifier.config.model_type,
            "architectures": list(classifier.config.architectures or []),
            "parameters": sum(parameter.numel() for parameter in network.parameters()),
            "segment_ids": "none" if separator is None else f"in the graph: 1 after the first id {separator}",
            **checkpoint.architecture(),
        }
        normalization = "calibration responses" if config.calibration else "none (no --calibration)"
        if checkpoint.normalization is not None:  # the checkpoint's own, as its library serves it
            measured = dataclasses.replace(measured, normalization=checkpoint.normalization)
            normalization = "checkpoint config.json (OpenRLHF normalize_reward, mean, std)"
        source = ImportSource(
            checkpoint=str(config.checkpoint),
            calibration=data,
            calibration_comparisons=len(comparisons),
            calibration_pairwise_accuracy=pairwise_accuracy(measured.served_scores),
            normalization=normalization,
        )
        return measured.manifest(
            architecture=architecture, max_length=max_length, tokens=special, input_format=spec, source=source
        )

    # The flags' cuts and normalization from the calibration responses, when there are some.
    responses = Responses(input_format, comparisons, data) if config.calibration else None
    return publish(
        Publication(
            target,
            probes,
            fp32_graph=traced(network),
            reference=reference,
            write_tokenizer=lambda staged: hf_tokenizer.backend_tokenizer.save(str(staged / TOKENIZER_FILE)),
            describe=describe,
            responses=responses,
            int8=config.int8,
            external_data_above=config.external_data_above,
        )
    )


def format_spec(hf_tokenizer: Any) -> dict[str, Any]:
    """The input format the checkpoint's tokenizer config implies: its chat template, else its pair template."""
    template = hf_tokenizer.chat_template
    if isinstance(template, dict):  # named templates: the default one
        template = template.get("default")
    if template:
        special_tokens = {name: str(token) for name, token in hf_tokenizer.special_tokens_map.items()}
        return {"style": "chat_template", "template": template, "special_tokens": special_tokens}
    return {"style": "pair"}


def _max_length(config: ImportConfig, classifier: PreTrainedModel, hf_tokenizer: Any) -> int:
    limits = [config.max_length, getattr(classifier.config, "max_position_embeddings", config.max_length)]
    if isinstance(hf_tokenizer.model_max_length, int) and hf_tokenizer.model_max_length < 10**9:
        limits.append(hf_tokenizer.model_max_length)
    return int(min(limits))


def _reference(network: RewardNetwork, encoded: list[EncodedComparison]) -> tuple[list[np.ndarray], np.ndarray]:
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


def _describe(config: ImportConfig) -> str:
    if config.calibration is None:
        return "built-in probe conversations"
    return data_label(config.calibration, config.calibration_lines)
