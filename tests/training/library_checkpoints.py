"""Reward-model checkpoints as other libraries save them, and each library's own reward on a batch of texts.

OpenRLHF's model class needs DeepSpeed to import and TRL 1.x no longer ships its value-head model,
so both are re-created here from their source (named per function) with the same module names, so
`save_pretrained` writes the files those libraries write; PEFT is the real library.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from tests.hf_checkpoints import write_checkpoint


def causal_lm(directory: Path, family: str = "llama") -> Path:
    """A tiny random causal LM with its fast tokenizer (the base a reward model is trained from)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    classifier_dir = write_checkpoint(directory.with_name(directory.name + "-classifier"), family)
    torch.manual_seed(1)
    AutoModelForCausalLM.from_pretrained(classifier_dir).save_pretrained(directory)
    AutoTokenizer.from_pretrained(classifier_dir).save_pretrained(directory)
    return directory


def openrlhf_reward_class(config: Any) -> Any:  # a PreTrainedModel subclass made for `config`
    """OpenRLHF's reward model for `config` (openrlhf/models/model.py, `_get_reward_model`, without packing): the
    config's base model under its `base_model_prefix`, a bias-free head named by `value_head_prefix`, the value
    at the last attended token, normalized in eval mode when `normalize_reward`."""
    from transformers import AutoModel

    base_class: Any = AutoModel._model_mapping[type(config)]
    prefix = getattr(config, "value_head_prefix", "score")

    class RewardModel(base_class.__base__):  # type: ignore[misc,name-defined]
        def __init__(self, config: Any):
            super().__init__(config)
            setattr(self, self.base_model_prefix, base_class(config))
            setattr(self, prefix, nn.Linear(config.hidden_size, 1, bias=False))
            self.normalize_reward = config.normalize_reward
            self.register_buffer("mean", torch.zeros(1), persistent=False)
            self.register_buffer("std", torch.ones(1), persistent=False)
            self.post_init()

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            last = attention_mask.size(1) - 1 - attention_mask.long().fliplr().argmax(dim=1, keepdim=True)
            position_ids = attention_mask.long().cumsum(-1) - 1
            position_ids.masked_fill_(attention_mask == 0, 1)
            base = getattr(self, self.base_model_prefix)
            hidden = base(input_ids, attention_mask=attention_mask, position_ids=position_ids)["last_hidden_state"]
            reward = getattr(self, prefix)(hidden).squeeze(-1).gather(dim=1, index=last).squeeze(1)
            if not self.training and self.normalize_reward:
                reward = (reward - self.mean) / self.std
            return reward

    return RewardModel


def write_openrlhf(directory: Path, base: Path, *, prefix: str = "score", normalize: bool = False) -> Path:
    """What OpenRLHF's train_rm saves: its tokenizer with pad = eos when it had none (`get_tokenizer`), the model's
    `save_pretrained`, and config.json with `value_head_prefix`, the eval rewards' `mean` and `std`."""
    from transformers import AutoConfig, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    tokenizer.pad_token = tokenizer.eos_token  # a Llama 3 tokenizer has no pad token of its own
    config = AutoConfig.from_pretrained(base)
    config.normalize_reward = normalize
    config.value_head_prefix = prefix
    model = openrlhf_reward_class(config).from_pretrained(base, config=config).eval()
    torch.manual_seed(2)
    with torch.no_grad():  # a trained head, not init_value_head's near-zero one, so rewards differ
        getattr(model, prefix).weight.normal_(0.0, 1.0)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.config.mean, model.config.std = 0.75, 2.5
    model.save_pretrained(directory)
    model.config.to_json_file(directory / "config.json")
    tokenizer.save_pretrained(directory)
    return directory


def openrlhf_rewards(checkpoint: Path, texts: list[str], normalize: bool) -> list[float]:
    """OpenRLHF's reward server (openrlhf/cli/serve_rm.py): one left-padded batch, special tokens not added again."""
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(checkpoint)
    config.normalize_reward = normalize  # `--reward.normalize_enable`
    model = openrlhf_reward_class(config).from_pretrained(checkpoint, config=config).eval()
    # Its __init__ sets these from config.json; transformers 5 builds the model on the meta device and leaves
    # buffers that are not in the weight files uninitialized, so set them again as __init__ meant.
    model.mean.fill_(getattr(config, "mean", 0.0))
    model.std.fill_(getattr(config, "std", 1.0))
    tokenizer = AutoTokenizer.from_pretrained(checkpoint, padding_side="left")
    batch = tokenizer(texts, return_tensors="pt", add_special_tokens=False, padding=True)
    with torch.no_grad():
        return [float(reward) for reward in model(batch["input_ids"], batch["attention_mask"])]


def write_value_head(directory: Path, base: Path, *, separate_head: bool) -> Path:
    """TRL's AutoModelForCausalLMWithValueHead as saved (trl/experimental/ppo/modeling_value_head.py): the LM's state
    dict plus `v_head.summary.{weight,bias}`; with `separate_head`, as LLaMA-Factory's fix_valuehead_checkpoint
    then splits it: the LM alone, and the head in value_head.safetensors."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    language_model = AutoModelForCausalLM.from_pretrained(base)
    torch.manual_seed(3)
    head = nn.Linear(language_model.config.hidden_size, 1)
    nn.init.normal_(head.weight, 0.0, 1.0)
    head_state = {f"v_head.summary.{name}": tensor.detach().clone() for name, tensor in head.state_dict().items()}
    if separate_head:
        language_model.save_pretrained(directory)
        save_file(head_state, directory / "value_head.safetensors", metadata={"format": "pt"})
    else:
        language_model.save_pretrained(directory, state_dict={**language_model.state_dict(), **head_state})
    AutoTokenizer.from_pretrained(base).save_pretrained(directory)
    return directory


def saved_value_head(directory: Path) -> dict[str, torch.Tensor]:
    """`v_head.summary.*` as TRL or LLaMA-Factory saved it."""
    from safetensors.torch import load_file

    separate = directory / "value_head.safetensors"
    tensors = load_file(separate if separate.is_file() else directory / "model.safetensors")
    return {name: tensor for name, tensor in tensors.items() if name.startswith("v_head.")}


def value_head_rewards(
    language_model: nn.Module, head_state: dict[str, torch.Tensor], tokenizer: Any, texts: list[str]
) -> list[float]:
    """LLaMA-Factory's reward (chat/hf_engine.py `_get_scores`): TRL's value head over the LM's last hidden states,
    read at `attention_mask.sum(-1) - 1` of a right-padded batch."""
    head = nn.Linear(head_state["v_head.summary.weight"].shape[1], 1)
    head.load_state_dict({name.removeprefix("v_head.summary."): tensor for name, tensor in head_state.items()})
    tokenizer.padding_side = "right"
    batch = tokenizer(texts, return_tensors="pt", add_special_tokens=False, padding=True)
    with torch.no_grad():
        output = language_model(**batch, output_hidden_states=True)
        values = head(output.hidden_states[-1]).squeeze(-1)
        last = batch["attention_mask"].sum(-1, keepdim=True) - 1
        return [float(value) for value in values.gather(dim=-1, index=last)[:, 0]]
