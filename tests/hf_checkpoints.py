"""Tiny random-weight Hugging Face reward models, built locally (no hub): two encoders, three decoder families.

Each is a `save_pretrained` directory with a one-label sequence classifier and a fast tokenizer
trained on a few lines; the decoders carry a chat template in their tokenizer config, as real
Llama 3, Qwen2 and Gemma reward models do.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from tokenizers import Tokenizer, processors

from tests.tiny_model import train_tokenizer

if TYPE_CHECKING:
    from transformers import PreTrainedConfig

CORPUS = [
    "How do I bake bread? Mix flour, water, yeast and salt, knead, let it rise, bake at 230C.",
    "What is the capital of France? Paris is the capital of France.",
    "I'm sorry, I can't help with that. Please ask something else.",
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Reward models score responses; RL trainers query them millions of times.",
    "system user assistant model Human Assistant You are a helpful assistant.",
]

# Llama 3's own template, as in Meta-Llama-3-8B-Instruct's tokenizer_config.json.
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}"
    "{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
# Qwen2's own template (Qwen2-0.5B-Instruct): a default system turn when the conversation has none.
QWEN2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Gemma's own template (gemma-2b-it): no system role, strict user/model alternation, trimmed turns.
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)

FAMILIES = ("bert", "deberta", "llama", "qwen2", "gemma")
ENCODERS = ("bert", "deberta")


def _tokenizer(special: list[str]) -> Tokenizer:
    return train_tokenizer(CORPUS, 300, special)


def _config(family: str, vocab_size: int, pad_id: int) -> PreTrainedConfig:
    from transformers import AutoConfig

    sizes = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
    common = {"vocab_size": vocab_size, "pad_token_id": pad_id, "num_labels": 1, "max_position_embeddings": 256}
    # By model type, as config.json names it: num_labels and DeBERTa's position_buckets are not in the classes'
    # typed signatures, only in what they accept.
    if family == "bert":
        return AutoConfig.for_model("bert", **sizes, **common, type_vocab_size=2)
    if family == "deberta":
        specific = {"relative_attention": True, "position_buckets": 32, "type_vocab_size": 0}
        return AutoConfig.for_model("deberta-v2", **sizes, **common, **specific)
    if family == "gemma":
        return AutoConfig.for_model("gemma", **sizes, **common, num_key_value_heads=2, head_dim=8)
    return AutoConfig.for_model(family, **sizes, **common, num_key_value_heads=2, tie_word_embeddings=False)


def write_checkpoint(directory: Path, family: str, seed: int = 0) -> Path:
    """A `save_pretrained` reward model of `family` (bert, deberta, llama, qwen2, gemma) in `directory`."""
    from transformers import AutoModelForSequenceClassification, PreTrainedTokenizerFast

    if family in ENCODERS:
        backend = _tokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]"])
        cls_id, sep_id = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
        backend.post_processor = processors.TemplateProcessing(  # BERT marks the response as segment 1
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B:1 [SEP]:1" if family == "bert" else "[CLS] $A [SEP] $B [SEP]",
            special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
        )
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=backend,
            pad_token="[PAD]",
            unk_token="[UNK]",
            cls_token="[CLS]",
            sep_token="[SEP]",
            model_input_names=["input_ids", "token_type_ids", "attention_mask"],  # as BertTokenizerFast
        )
    elif family == "llama":
        special = ["<|pad|>", "<|unk|>", "<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"]
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=_tokenizer(special),
            pad_token="<|pad|>",
            bos_token="<|begin_of_text|>",
            eos_token="<|eot_id|>",
        )
        tokenizer.chat_template = LLAMA3_TEMPLATE
    elif family == "gemma":
        special = ["<pad>", "<unk>", "<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>"]
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=_tokenizer(special), pad_token="<pad>", bos_token="<bos>", eos_token="<eos>"
        )
        tokenizer.chat_template = GEMMA_TEMPLATE
    else:
        special = ["<|endoftext|>", "<|unk|>", "<|im_start|>", "<|im_end|>"]
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=_tokenizer(special), pad_token="<|endoftext|>", eos_token="<|im_end|>"
        )
        tokenizer.chat_template = QWEN2_TEMPLATE
    torch.manual_seed(seed)
    pad_id = tokenizer.pad_token_id
    assert isinstance(pad_id, int)
    config = _config(family, len(tokenizer), pad_id)
    model = AutoModelForSequenceClassification.from_config(config)
    # Random init scores everything near 0; a larger head spreads scores so rankings mean something.
    with torch.no_grad():
        head = model.classifier if family in ENCODERS else model.score
        head.weight.normal_(0.0, 1.0)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
