"""A training run on disk: the trained network, its tokenizer and how it was trained, reloadable for export.

<run>/checkpoint.pt    from scratch: {"config", "state_dict"}
<run>/hf/              with --base: save_pretrained() model + tokenizer
<run>/tokenizer.json   the `tokenizers` file serving uses
<run>/training.json    data, split, seed, dev accuracy, special token ids, max_length
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tokenizers import Tokenizer
from torch import nn

from rmserve.core.formats import TranscriptFormat
from rmserve.core.manifest import TOKENIZER_FILE
from rmserve.core.tokenizer import PairEncoder, SpecialTokens
from rmserve.core.transcript import Transcript
from rmserve.training.model import RewardModel
from rmserve.training.options import HeadChoice, ModelConfig
from rmserve.training.value_head import LastTokenReward

if TYPE_CHECKING:
    from transformers import PreTrainedModel

CHECKPOINT_FILE = "checkpoint.pt"
TRAINING_FILE = "training.json"
HF_DIR = "hf"
TRANSCRIPT = Transcript()  # how trained models read text: HH-RLHF transcripts


class HFReward(nn.Module):
    """A Hugging Face sequence classifier as `(input_ids, attention_mask) -> [batch]`: its one output, or the output
    (or weighted sum of outputs) `choice` names when its head has several.

    Its embedding is what the classification head reads: the input of the one linear layer that
    outputs the labels (an encoder's pooled/CLS state; for a decoder, which scores every position,
    the hidden state of the last non-padding token, the position transformers keeps the score of).
    With a `separator`, a BERT-style pair model gets the segment ids its tokenizer gives, derived from the
    ids in the graph (serving sends input_ids and attention_mask only): `[CLS] a [SEP] b [SEP]` -> `0 0 0 1 1`.
    """

    def __init__(self, classifier: PreTrainedModel, choice: HeadChoice | None = None, separator: int | None = None):
        super().__init__()
        self.classifier = classifier
        self.head = score_head(classifier)
        self.separator = separator
        choice = choice or HeadChoice()
        self.output = choice.index or 0
        weights = None if choice.weights is None else torch.tensor(choice.weights, dtype=torch.float32)
        self.output_weights: torch.Tensor | None
        self.register_buffer("output_weights", weights)

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The classifier's forward pass. -> [batch, outputs]"""
        segment_ids = {} if self.separator is None else {"token_type_ids": segments(input_ids, self.separator)}
        logits: torch.Tensor = self.classifier(input_ids=input_ids, attention_mask=attention_mask, **segment_ids).logits
        return logits

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        logits = self.logits(input_ids, attention_mask)
        if self.output_weights is None:
            return logits[:, self.output]
        return logits @ self.output_weights  # [batch, outputs] @ [outputs] -> [batch]

    def score_and_embedding(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The raw reward [batch] and the head's input [batch, hidden], from one forward pass."""
        read: list[torch.Tensor] = []
        hook = self.head.register_forward_hook(lambda _module, inputs, _output: read.append(inputs[0]))
        try:
            score = self(input_ids, attention_mask)
        finally:
            hook.remove()
        (head_input,) = read
        if head_input.dim() == 3:  # [batch, seq, hidden]: pool as transformers pools the logits
            head_input = head_input[torch.arange(input_ids.shape[0]), self.last_non_pad(input_ids)]
        return score, head_input

    def last_non_pad(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The rightmost position that is not padding, as GenericForSequenceClassification finds it. -> [batch]"""
        not_pad = torch.ne(input_ids, self.classifier.config.pad_token_id).long()
        return (torch.arange(input_ids.shape[1]) * not_pad).argmax(-1)


def segments(input_ids: torch.Tensor, separator: int) -> torch.Tensor:
    """[batch, seq] ids -> [batch, seq] segment ids: how many separators come strictly before, capped at 1."""
    is_separator = (input_ids == separator).long()
    return (torch.cumsum(is_separator, dim=1) - is_separator).clamp(max=1)


# What `rmserve train` trains, and what `rmserve export` and `import` trace: `(input_ids, attention_mask) -> [batch]`,
# with `score_and_embedding` beside it.
TrainedNetwork = RewardModel | HFReward
RewardNetwork = TrainedNetwork | LastTokenReward


def score_head(classifier: PreTrainedModel) -> nn.Linear:
    """The classifier's last linear layer with one output per label: the one that writes the logits."""
    labels = classifier.config.num_labels
    heads = [
        module for module in classifier.modules() if isinstance(module, nn.Linear) and module.out_features == labels
    ]
    if not heads:
        raise ValueError(
            f"{type(classifier).__name__}: no linear layer with {labels} output(s) to read the embedding at"
        )
    return heads[-1]


@dataclass
class TrainedModel:
    network: TrainedNetwork
    tokenizer: Tokenizer
    special: SpecialTokens
    max_length: int
    architecture: dict[str, Any]
    training: dict[str, Any]

    def input_format(self) -> TranscriptFormat:
        """How the run lays out exchanges, in training, export and serving alike (the manifest records it)."""
        encoder = PairEncoder(Tokenizer.from_str(self.tokenizer.to_str()), self.max_length, self.special)
        return TranscriptFormat(TRANSCRIPT, encoder)

    def save(self, run_dir: Path) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save(str(run_dir / TOKENIZER_FILE))
        if isinstance(self.network, HFReward):
            self.network.classifier.save_pretrained(run_dir / HF_DIR)
        else:
            torch.save(
                {"config": self.network.config.to_dict(), "state_dict": self.network.state_dict()},
                run_dir / CHECKPOINT_FILE,
            )
        record = {
            "architecture": self.architecture,
            "training": self.training,
            "special": vars(self.special),
            "max_length": self.max_length,
        }
        (run_dir / TRAINING_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def load_run(run_dir: Path) -> TrainedModel:
    """Reload what `TrainedModel.save` wrote, in eval mode."""
    record = json.loads((run_dir / TRAINING_FILE).read_text(encoding="utf-8"))
    if (run_dir / HF_DIR).is_dir():
        network: TrainedNetwork = HFReward(load_hf_classifier(run_dir / HF_DIR))
    else:
        saved = torch.load(run_dir / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
        network = RewardModel(ModelConfig(**saved["config"]))
        network.load_state_dict(saved["state_dict"])
    return TrainedModel(
        network=network.eval(),
        tokenizer=Tokenizer.from_file(str(run_dir / TOKENIZER_FILE)),
        special=SpecialTokens(**record["special"]),
        max_length=record["max_length"],
        architecture=record["architecture"],
        training=record["training"],
    )


def load_hf_classifier(path: Path) -> PreTrainedModel:
    """A local checkpoint as a one-label sequence classifier (eager attention exports to ONNX)."""
    from transformers import AutoModelForSequenceClassification

    classifier: PreTrainedModel = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=1, attn_implementation="eager", local_files_only=True
    )
    return classifier


def torch_score_fn(
    score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """A torch scorer (module or bound method) with OnnxScorer's numpy signature, without gradients."""

    def run(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return score(torch.from_numpy(input_ids), torch.from_numpy(attention_mask)).double().numpy()

    return run
