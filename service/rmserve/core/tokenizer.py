"""Token sequences for (prompt, response) pairs: `[bos] prompt-tail [sep] response [eos]`.

Prompt and response are tokenized separately and joined at the token level, so truncation
can keep what matters: the whole response as far as possible and the *end* of the prompt
(the turns right before the response). Whether anything was cut is reported per item.
Training and serving both encode through this class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tokenizers import Tokenizer

from rmserve.core.prompt_cache import PromptCache, PromptTokens
from rmserve.core.text_window import TextWindow

# Share of the token budget kept for the prompt when a long response would crowd it out.
PROMPT_FLOOR = 0.25


@dataclass(frozen=True)
class SpecialTokens:
    """Ids placed around the segments; `None` leaves that position out."""

    pad_id: int
    bos_id: int | None
    sep_id: int | None
    eos_id: int | None

    @property
    def count(self) -> int:
        return sum(token is not None for token in (self.bos_id, self.sep_id, self.eos_id))


@dataclass(frozen=True)
class Encoding:
    input_ids: list[int]
    truncated: bool
    # The response's tokens before truncation (the length flags read it); of one longer than the model reads, the
    # tokens of the part tokenized (rmserve.core.text_window), more than max_length.
    response_tokens: int


class PairEncoder:
    """Tokenizes prompt/response pairs into model inputs no longer than `max_length`."""

    def __init__(self, tokenizer: Tokenizer, max_length: int, special: SpecialTokens, prompt_cache_bytes: int = 0):
        if max_length <= special.count + 1:
            raise ValueError(f"max_length {max_length} leaves no room for text")
        self.tokenizer = plain(tokenizer)
        self.max_length = max_length
        self.special = special
        self.window = TextWindow(self.tokenizer, max_length)
        self.prompt_cache = PromptCache(prompt_cache_bytes, keep=max_length)

    def encode(self, prompts: Sequence[str], responses: Sequence[str]) -> list[Encoding]:
        """Encode pairs in batch calls of tokenizers (outside the GIL; the server turns its thread pool off,
        rmserve/gunicorn_conf.py), each text only as far as it can reach the model (rmserve.core.text_window).

        A group of responses to one prompt (GRPO) tokenizes that prompt once, and a prompt seen
        in a recent request is not tokenized again.
        """
        prompt_tokens, missing = self.prompt_cache.lookup(list(dict.fromkeys(prompts)))
        for prompt, window in zip(missing, self.window.encode(missing, "end"), strict=True):
            prompt_tokens[prompt] = self.prompt_cache.store(prompt, len(window.encoding), window.encoding.ids)
        return [
            self._join(prompt_tokens[prompt], response.encoding.ids)
            for prompt, response in zip(prompts, self.window.encode(responses, "start"), strict=True)
        ]

    def _join(self, prompt: PromptTokens, response: list[int]) -> Encoding:
        prompt_length, response_length = fit_pair(prompt.length, len(response), self.max_length - self.special.count)
        prompt_kept = prompt.tail[len(prompt.tail) - prompt_length :].tolist()
        response_kept = response[:response_length]
        truncated = prompt_length < prompt.length or response_length < len(response)
        special = self.special
        ids = (
            _optional(special.bos_id)
            + prompt_kept
            + _optional(special.sep_id)
            + response_kept
            + _optional(special.eos_id)
        )
        return Encoding(input_ids=ids, truncated=truncated, response_tokens=len(response))


def fit_pair(prompt_length: int, response_length: int, budget: int) -> tuple[int, int]:
    """Tokens to keep of a prompt (its end) and a response (its start) in `budget` tokens.

    The response is kept whole as far as possible, but a long one leaves the prompt PROMPT_FLOOR of the budget.
    """
    budget = max(budget, 0)
    prompt_floor = min(prompt_length, int(budget * PROMPT_FLOOR))
    response_kept = min(response_length, budget - prompt_floor)
    return min(prompt_length, budget - response_kept), response_kept


def plain(tokenizer: Tokenizer) -> Tokenizer:
    """The tokenizer with any truncation or padding its file configures turned off: formats do their own."""
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def _optional(token_id: int | None) -> list[int]:
    return [] if token_id is None else [token_id]


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad token sequences into `input_ids` and `attention_mask`, both int64 [batch, seq]."""
    width = max(len(sequence) for sequence in sequences)
    input_ids = np.full((len(sequences), width), pad_id, dtype=np.int64)
    attention_mask = np.zeros((len(sequences), width), dtype=np.int64)
    for row, sequence in enumerate(sequences):
        input_ids[row, : len(sequence)] = sequence
        attention_mask[row, : len(sequence)] = 1
    return input_ids, attention_mask
