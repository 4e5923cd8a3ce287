"""`rmserve import`: a Hugging Face reward model on disk -> a model repository version, nothing trained.

Load the checkpoint (a one-label `AutoModelForSequenceClassification`, encoder or decoder) and
its fast tokenizer, from the local path only; lay text out as the model was trained (`--layout`:
`chat_template`, `pair` or `text`; `auto` takes the chat template a checkpoint carries and otherwise
guesses, saying so); then publish through `rmserve.training.publish`: the traced graph (external
data past 2 GB) must reproduce transformers' own forward pass, run one unpadded item at a time while
ONNX scores the calibration items in padded batches of mixed lengths (where padding side and
last-token pooling go wrong), the embedding output (what the head reads) likewise; the served
tokens must equal the trainer's own tokenization for that layout; normalization and the flags'
statistics come from the calibration responses.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from rmserve.core.formats import load_format
from rmserve.core.layouts import prompt_turns
from rmserve.core.manifest import TOKENIZER_FILE, ImportSource, Manifest
from rmserve.core.tokenizer import SpecialTokens
from rmserve.training.checkpoint import RewardNetwork
from rmserve.training.checkpoint_formats import CheckpointError, load_reward_checkpoint
from rmserve.training.data import Comparison, read_comparisons
from rmserve.training.evaluate import EncodedComparison, encode_comparisons, pairwise_accuracy
from rmserve.training.export import traced
from rmserve.training.options import ImportConfig, ImportLayout, TrainedLayout
from rmserve.training.parity import Reference, tokenization_agreement
from rmserve.training.publish import Measured, Probes, Publication, Responses, claim_version, data_label, publish

if TYPE_CHECKING:
    from transformers import PreTrainedModel

# Without a calibration file: a few conversations of very different lengths, for parity only, written as a
# trainer's plain data has them (a chat template reads their turns).
PROBE_TEXTS = [
    ("hi", ("Hello! How can I help?", "no")),
    (
        "\n\nHuman: How do I bake bread?\n\nAssistant: Do you have yeast?\n\nHuman: yes\n\nAssistant: ",
        ("Mix flour, water, yeast and salt, knead, let it rise, then bake at 230C.", "Buy some. "),
    ),
    ("What is the capital of France?", ("Paris.", "France has no capital. " * 8)),
]
PROBES = [Comparison(prompt_turns(text, "prompt"), responses, prompt_text=text) for text, responses in PROBE_TEXTS]


@dataclass(frozen=True)
class LayoutChoice:
    """The manifest's `input_format`, and how it was chosen (the manifest's `source.layout`)."""

    spec: dict[str, Any]
    reason: str
    guessed: bool = False


def import_checkpoint(config: ImportConfig) -> Manifest:
    """Publish a local checkpoint as `<repository>/<name>/<version>`, scoring as transformers does."""
    target = claim_version(config.repository, config.name, config.version)
    checkpoint = load_reward_checkpoint(config)  # the format its library saved: rmserve.training.checkpoint_formats
    hf_tokenizer, classifier = checkpoint.tokenizer, checkpoint.model
    max_length = _max_length(config, classifier, hf_tokenizer)
    layout = choose_layout(config.layout, hf_tokenizer)
    if layout.guessed:  # one line, before the long part, so a wrong guess can be stopped
        print(f"rmserve import: {layout.reason}; choose with --layout {{text,pair,chat_template}}", file=sys.stderr)
    spec = layout.spec
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
        tokenization_agreement(input_format, hf_tokenizer, comparisons),
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
            layout=layout.reason,
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
            max_batch_tokens=config.max_batch_tokens,
        )
    )


def choose_layout(requested: ImportLayout, hf_tokenizer: Any) -> LayoutChoice:
    """The layout `--layout` names, or for `auto` the one the checkpoint shows (a chat template), else a guess:
    `text` when the tokenizer has an EOS for TRL's RewardTrainer to have appended, `pair` when it has none."""
    template = hf_tokenizer.chat_template
    if isinstance(template, dict):  # named templates: the default one
        template = template.get("default")
    eos_token = hf_tokenizer.eos_token or None
    if requested != "auto":
        return LayoutChoice(layout_spec(requested, template, eos_token, hf_tokenizer), f"--layout {requested}")
    if template:
        spec = layout_spec("chat_template", template, eos_token, hf_tokenizer)
        return LayoutChoice(spec, "the chat template in the checkpoint's tokenizer config")
    guess: TrainedLayout = "text" if eos_token else "pair"
    trainer = "TRL RewardTrainer on plain data" if eos_token else "a cross-encoder on (prompt, response) pairs"
    return LayoutChoice(
        layout_spec(guess, template, eos_token, hf_tokenizer),
        f"guessed --layout {guess} ({trainer}): no chat template says how the model was trained",
        guessed=True,
    )


def layout_spec(
    layout: TrainedLayout, template: str | None, eos_token: str | None, hf_tokenizer: Any
) -> dict[str, Any]:
    """The manifest's `input_format` for a layout (rmserve.core.formats.load_format reads it)."""
    if layout == "text":
        return {"style": "text", "eos_token": eos_token}
    if layout == "pair":
        return {"style": "pair"}
    if not template:
        raise CheckpointError("--layout chat_template: the checkpoint's tokenizer config has no chat template")
    special_tokens = {name: str(token) for name, token in hf_tokenizer.special_tokens_map.items()}
    return {"style": "chat_template", "template": template, "special_tokens": special_tokens}


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


def _describe(config: ImportConfig) -> str:
    if config.calibration is None:
        return "built-in probe conversations"
    return data_label(config.calibration, config.calibration_lines)
