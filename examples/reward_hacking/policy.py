"""The policy: a tiny GPT-2 initialised locally, briefly pre-trained on the training exchanges so it writes words."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from examples.trl_grpo import tiny_tokenizer


@dataclass(frozen=True)
class PolicyConfig:
    """The policy's size and its pre-training budget."""

    vocab_size: int = 2048
    d_model: int = 96
    layers: int = 2
    heads: int = 2
    context: int = 192  # prompt + completion tokens
    pretrain_steps: int = 300
    pretrain_batch: int = 32
    pretrain_tokens: int = 96  # a pre-training exchange is cut to this many tokens
    pretrain_learning_rate: float = 3e-3


def chat_text(tokenizer: PreTrainedTokenizerFast, question: str, answer: str) -> str:
    """One exchange as the policy sees it (the chat template of examples/trl_grpo.py), ended by EOS."""
    messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    assert isinstance(rendered, str)
    return rendered + str(tokenizer.eos_token)


def build_policy(
    exchanges: Sequence[tuple[str, str]], config: PolicyConfig, seed: int
) -> tuple[GPT2LMHeadModel, PreTrainedTokenizerFast, list[float]]:
    """A tokenizer trained on `exchanges`, and a GPT-2 pre-trained on them; also the pre-training losses."""
    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer([f"{question}\n{answer}" for question, answer in exchanges], config.vocab_size)
    model = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=len(tokenizer),
            n_positions=config.context,
            n_embd=config.d_model,
            n_layer=config.layers,
            n_head=config.heads,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    texts = [chat_text(tokenizer, question, answer) for question, answer in exchanges]
    losses = pretrain(model, tokenizer, texts, config, random.Random(seed))
    return model, tokenizer, losses


def pretrain(
    model: GPT2LMHeadModel,
    tokenizer: PreTrainedTokenizerFast,
    texts: Sequence[str],
    config: PolicyConfig,
    rng: random.Random,
) -> list[float]:
    """Next-token prediction on random batches of `texts`; returns the loss of each step."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.pretrain_learning_rate)
    model.train()
    losses = []
    for _ in range(config.pretrain_steps):
        batch = tokenizer(
            rng.sample(list(texts), config.pretrain_batch),
            truncation=True,
            max_length=config.pretrain_tokens,
            padding=True,
            return_tensors="pt",
        )
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)  # no loss on padding
        loss = model(**batch, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.train(False)
    return losses
