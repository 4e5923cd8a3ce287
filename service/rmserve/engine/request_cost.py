"""What scoring a request will take in memory, and the budget of such bytes a process scores at once.

A body's size says little about it: 512 responses to one 64k-character prompt fit in 70 KB, yet every
model encodes 512 items of `max_length` tokens; a text with one emoji in it takes 4 bytes a character.
Once a request's exchanges are built, its cost is estimated from what it holds (its texts, as Python
keeps them, and the token ids each model keeps of each item) and reserved for as long as it is scored.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from rmserve.core.conversation import Exchange
from rmserve.core.text_window import CHUNK_CHARS
from rmserve.errors import QueueFull

# One kept token id: a Python int in a list (8 + 32 bytes), then int64 in a padded batch.
ID_BYTES = 48
# Special and template tokens an item may add to its text's.
EXTRA_TOKENS = 8
# A character being tokenized (rmserve.core.text_window, a chunk at a time): about a token each, 100 bytes a token.
TOKENIZING_BYTES = 100


def request_bytes(exchanges: Sequence[Exchange], max_lengths: Sequence[int]) -> int:
    """Bytes scoring `exchanges` takes with models reading `max_lengths` tokens each (an ensemble: one per member).

    Its texts (each once, however many items share it) and a copy of them per model laying them out; the ids each
    model keeps of each item (a token a character at most, up to its max_length); one chunk of tokenization.
    """
    texts: dict[int, str] = {}
    kept_ids = 0
    for exchange in exchanges:
        item_texts = [exchange.response, *(turn.content for turn in exchange.prompt)]
        texts.update((id(text), text) for text in (*item_texts, exchange.prompt_text) if text is not None)
        chars = sum(map(len, item_texts)) + EXTRA_TOKENS
        kept_ids += sum(min(max_length, chars) for max_length in max_lengths)
    text_bytes = sum(map(sys.getsizeof, texts.values())) * (1 + len(max_lengths))
    tokenizing = min(CHUNK_CHARS, sum(map(len, texts.values()))) * TOKENIZING_BYTES
    return text_bytes + kept_ids * ID_BYTES + tokenizing


class MemoryBudget:
    """The bytes the requests being scored may take at once (RMSERVE_MAX_INFLIGHT_MEMORY_BYTES); thread-safe.

    A request that alone exceeds the budget is scored only when no other is (so it is never refused for good).
    """

    def __init__(self, limit: int):
        self.limit = limit
        self.reserved = 0
        self._lock = threading.Lock()

    @contextmanager
    def reserve(self, cost: int, retry_after_s: Callable[[], int]) -> Iterator[None]:
        """Hold `cost` bytes while the block runs, or raise QueueFull at once (`retry_after_s` asked only then)."""
        with self._lock:
            admitted = self.reserved == 0 or self.reserved + cost <= self.limit
            if admitted:
                self.reserved += cost
            held = self.reserved
        if not admitted:
            raise QueueFull(
                f"the requests being scored take about {held} of the {self.limit} bytes this worker scores at once "
                f"and this one needs about {cost} (RMSERVE_MAX_INFLIGHT_MEMORY_BYTES)",
                retry_after_s(),
            )
        try:
            yield
        finally:
            with self._lock:
                self.reserved -= cost
