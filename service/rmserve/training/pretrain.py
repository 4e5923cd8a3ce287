"""Masked-LM pretraining of the from-scratch transformer on the training transcripts (BERT-style)."""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch
from torch.nn import functional as F
from tqdm import tqdm

from rmserve.core.tokenizer import pad_batch
from rmserve.training.model import Transformer
from rmserve.training.vocab import MASK_ID, SPECIAL_TOKENS

MASK_RATE = 0.15


def pretrain_masked_lm(
    model: Transformer,
    sequences: Sequence[Sequence[int]],
    epochs: int,
    seed: int,
    batch_size: int = 32,
    learning_rate: float = 5e-4,
) -> float:
    """Predict 15% of the tokens (80% shown as [MASK], 10% random, 10% unchanged).

    Returns the last epoch's mean loss.
    """
    generator = torch.Generator().manual_seed(seed)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=0.01)
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))  # similar lengths per batch
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    model.train()
    mean_loss = float("nan")
    for epoch in range(1, epochs + 1):
        random.shuffle(batches)
        total = 0.0
        progress = tqdm(batches, desc=f"masked-LM {epoch}/{epochs}", leave=False)
        for indices in progress:
            input_ids, attention_mask = (torch.from_numpy(a) for a in pad_batch([sequences[i] for i in indices], 0))
            masked_ids, targets = _mask_tokens(input_ids, model.config.vocab_size, generator)
            hidden = model.hidden_states(masked_ids, attention_mask)
            chosen = targets >= 0
            loss = F.cross_entropy(model.mlm_head(hidden[chosen]), targets[chosen])
            optimizer.zero_grad()
            torch.autograd.backward(loss)
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimizer.step()
            total += loss.item()
            progress.set_postfix(loss=f"{loss.item():.3f}")
        mean_loss = total / len(batches)
        tqdm.write(f"masked-LM epoch {epoch}: loss {mean_loss:.3f}")
    return round(mean_loss, 4)


def _mask_tokens(
    input_ids: torch.Tensor, vocab_size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (model input with masks, targets: the original id where masked, else -1). [batch, seq] x2"""
    maskable = input_ids >= len(SPECIAL_TOKENS)
    draw = torch.rand(input_ids.shape, generator=generator)
    chosen = maskable & (draw < MASK_RATE)
    targets = torch.where(chosen, input_ids, torch.full_like(input_ids, -1))
    masked = input_ids.clone()
    masked[chosen & (draw < MASK_RATE * 0.8)] = MASK_ID
    random_slot = chosen & (draw >= MASK_RATE * 0.8) & (draw < MASK_RATE * 0.9)
    masked[random_slot] = torch.randint(len(SPECIAL_TOKENS), vocab_size, input_ids.shape, generator=generator)[
        random_slot
    ]
    return masked, targets
