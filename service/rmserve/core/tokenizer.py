"""Token sequences for (prompt, response) pairs: `[bos] prompt-tail [sep] response [eos]`.

Prompt and response are tokenized separately and joined at the token level, so truncation
can keep what matters: the whole response as far as possible and the *end* of the prompt
(the turns right before the response). Whether anything was cut is reported per item.
Training and serving both encode through this class.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tokenizers import Tokenizer

# Share of the token budget kept for the prompt when a long response would crowd it out.
PROMPT_FLOOR = 0.25
# Prompts whose tokens are remembered: RL trainers send each prompt with 8-16 sampled responses,
# often one per request, and an HH prompt takes several times as long to tokenize as its response.
PROMPT_CACHE_SIZE = 1024


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
    response_tokens: int  # the whole response's tokens, before any truncation (the length flags read it)


class PairEncoder:
    """Tokenizes prompt/response pairs into model inputs no longer than `max_length`."""

    def __init__(self, tokenizer: Tokenizer, max_length: int, special: SpecialTokens):
        if max_length <= special.count + 1:
            raise ValueError(f"max_length {max_length} leaves no room for text")
        self.tokenizer = plain(tokenizer)
        self.max_length = max_length
        self.special = special
        self._prompt_cache = PromptCache(PROMPT_CACHE_SIZE, keep=max_length)

    def encode(self, prompts: Sequence[str], responses: Sequence[str]) -> list[Encoding]:
        """Encode pairs in one batch call of tokenizers (outside the GIL; the server turns its thread
        pool off, rmserve/gunicorn_conf.py).

        A group of responses to one prompt (GRPO) tokenizes that prompt once, and a prompt seen
        in a recent request is not tokenized again. The `_fast` call skips the character offsets,
        which nothing here reads (the same ids).
        """
        prompt_tokens, missing = self._prompt_cache.lookup(list(dict.fromkeys(prompts)))
        encoded = self.tokenizer.encode_batch_fast([*missing, *responses], add_special_tokens=False)
        for prompt, encoding in zip(missing, encoded, strict=False):  # the first len(missing) are the prompts
            prompt_tokens[prompt] = self._prompt_cache.store(prompt, encoding.ids)
        response_ids = encoded[len(missing) :]
        return [
            self._join(prompt_tokens[prompt], response.ids)
            for prompt, response in zip(prompts, response_ids, strict=True)
        ]

    def _join(self, prompt: PromptTokens, response: list[int]) -> Encoding:
        prompt_length, response_length = fit_pair(prompt.length, len(response), self.max_length - self.special.count)
        prompt_kept = prompt.tail[len(prompt.tail) - prompt_length :]
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


@dataclass(frozen=True)
class PromptTokens:
    """A prompt's token count and its last tokens (truncation keeps the end of a prompt, never more)."""

    length: int
    tail: list[int]


class PromptCache:
    """Least-recently-used prompt tokens, shared by the request threads."""

    def __init__(self, size: int, keep: int):
        self.size = size
        self.keep = keep
        self._entries: OrderedDict[str, PromptTokens] = OrderedDict()
        self._lock = threading.Lock()

    def lookup(self, prompts: Sequence[str]) -> tuple[dict[str, PromptTokens], list[str]]:
        """(tokens of the prompts cached, the prompts not cached)."""
        found, missing = {}, []
        with self._lock:
            for prompt in prompts:
                tokens = self._entries.get(prompt)
                if tokens is None:
                    missing.append(prompt)
                else:
                    found[prompt] = tokens
                    self._entries.move_to_end(prompt)
        return found, missing

    def store(self, prompt: str, ids: list[int]) -> PromptTokens:
        tokens = PromptTokens(len(ids), ids[-self.keep :])
        with self._lock:
            self._entries[prompt] = tokens
            if len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return tokens


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
