"""Reward models that read a linear value head at the last attended token: OpenRLHF's, TRL's and LLaMA-Factory's.

Both formats were reproduced from their libraries' source, since neither class imports here (OpenRLHF's
needs DeepSpeed; TRL 1.x no longer ships its value-head model):

- OpenRLHF (`openrlhf/models/model.py`, `_get_reward_model`): the config's `AutoModel` under its
  `base_model_prefix` and a bias-free `nn.Linear(hidden, 1)` named by `config.value_head_prefix`
  (default `score`); position ids count attended tokens only; the reward is the value at the last
  attended token; with `normalize_reward`, `(reward - mean) / std` from config.json.
- TRL's `AutoModelForCausalLMWithValueHead` (`v_head.summary`, a `Linear(hidden, 1)` with bias, over
  the causal LM's last hidden states, saved among the LM's weights) and LLaMA-Factory's copy of it
  (the head in `value_head.safetensors` beside the LM): LLaMA-Factory's reward is the value at the last
  attended token (`attention_mask.sum(-1) - 1` of its right-padded batches).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import safe_open
from torch import nn

if TYPE_CHECKING:
    from transformers import PreTrainedModel

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
LLAMA_FACTORY_HEAD_FILES = ("value_head.safetensors", "value_head.bin")
TRL_HEAD = "v_head.summary"


class LastTokenReward(nn.Module):
    """A transformer and a one-output linear head read at the last attended token. -> [batch]

    The embedding is the hidden state the head reads there. `positions_from_mask`: position ids count
    attended tokens only, as OpenRLHF passes them (its issue 217); otherwise the model's own, as TRL's.
    """

    def __init__(self, transformer: PreTrainedModel, head: nn.Linear, positions_from_mask: bool):
        super().__init__()
        self.transformer = transformer
        self.head = head
        self.positions_from_mask = positions_from_mask

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.score_and_embedding(input_ids, attention_mask)[0]

    def score_and_embedding(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The raw reward [batch] and the head's input [batch, hidden], from one forward pass."""
        positions = {}
        if self.positions_from_mask:
            position_ids = attention_mask.long().cumsum(-1) - 1
            positions["position_ids"] = position_ids.masked_fill(attention_mask == 0, 1)
        hidden = self.transformer(input_ids=input_ids, attention_mask=attention_mask, **positions).last_hidden_state
        last = (torch.arange(input_ids.shape[1]) * attention_mask).argmax(-1)  # [batch]: last attended position
        embedding = hidden[torch.arange(input_ids.shape[0]), last]  # [batch, seq, hidden] -> [batch, hidden]
        return self.head(embedding)[:, 0], embedding


def weight_names(checkpoint: Path) -> dict[str, Path]:
    """Every tensor name in a `save_pretrained` directory's weight files (sharded or not), with its file."""
    for index in WEIGHT_INDEXES:
        if (checkpoint / index).is_file():
            weight_map = json.loads((checkpoint / index).read_text(encoding="utf-8"))["weight_map"]
            return {name: checkpoint / file for name, file in weight_map.items()}
    for file in WEIGHT_FILES:
        if (checkpoint / file).is_file():
            return file_weight_names(checkpoint / file)
    return {}


def read_tensors(files: dict[str, Path], names: Iterable[str]) -> dict[str, torch.Tensor]:
    """The named tensors, in fp32, from the files `weight_names` found them in."""
    tensors = {}
    for name in names:
        path = files[name]
        if path.suffix == ".safetensors":
            with safe_open(str(path), framework="pt", device="cpu") as weights:
                tensors[name] = weights.get_tensor(name).float()
        else:
            tensors[name] = torch.load(path, map_location="cpu", weights_only=True, mmap=True)[name].float()
    return tensors


def file_weight_names(path: Path) -> dict[str, Path]:
    """Every tensor name in one weight file (safetensors, or a torch state dict), with the file."""
    if path.suffix == ".safetensors":
        with safe_open(str(path), framework="pt", device="cpu") as weights:
            return dict.fromkeys(weights.keys(), path)
    return dict.fromkeys(torch.load(path, map_location="cpu", weights_only=True, mmap=True), path)


def linear_head(tensors: dict[str, torch.Tensor], prefix: str) -> nn.Linear:
    """`<prefix>.weight` [1, hidden] (and `<prefix>.bias` if saved) as an fp32 linear layer, in eval mode."""
    weight = tensors[f"{prefix}.weight"]
    bias = tensors.get(f"{prefix}.bias")
    head = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        head.weight.copy_(weight)
        if bias is not None:
            head.bias.copy_(bias)
    return head.eval()


def value_head_weights(directory: Path) -> dict[str, Path] | None:
    """Where `v_head.summary` is: LLaMA-Factory's value_head file, else the weight files (TRL's, with the LM's
    weights, or alone beside a PEFT adapter); None if nowhere."""
    separate = next((directory / name for name in LLAMA_FACTORY_HEAD_FILES if (directory / name).is_file()), None)
    names = weight_names(directory) if separate is None else file_weight_names(separate)
    return names if f"{TRL_HEAD}.weight" in names else None
