"""The tokens of recent prompts, so a prompt sent again is not tokenized again, within a budget of bytes.

RL trainers send each prompt with 8-16 sampled responses, often one per request, and an HH prompt
takes several times as long to tokenize as its response. An entry holds what truncation can use of a
prompt (its token count and at most `keep` tokens of its end) under a digest of its text, so a
64k-character prompt costs about as much as a short one: the budget bounds memory, not a count.
"""

from __future__ import annotations

import hashlib
import sys
import threading
from array import array
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

# What an entry costs besides its tokens' array: the dictionary slot, the digest, the entry object.
ENTRY_OVERHEAD_BYTES = 250


@dataclass(frozen=True)
class PromptTokens:
    """A prompt's token count and its last tokens (truncation keeps the end of a prompt, never more)."""

    length: int
    tail: array[int]  # int32 ids

    @property
    def size(self) -> int:
        """Bytes this entry holds in the cache."""
        return ENTRY_OVERHEAD_BYTES + sys.getsizeof(self.tail)


class PromptCache:
    """Least-recently-used prompt tokens within `max_bytes` (0: nothing is kept), shared by the request threads."""

    def __init__(self, max_bytes: int, keep: int):
        self.max_bytes = max_bytes
        self.keep = keep
        self.bytes = 0
        self._entries: OrderedDict[bytes, PromptTokens] = OrderedDict()
        self._lock = threading.Lock()

    def lookup(self, prompts: Sequence[str]) -> tuple[dict[str, PromptTokens], list[str]]:
        """(tokens of the prompts cached, the prompts not cached)."""
        found, missing = {}, []
        keys = [_digest(prompt) for prompt in prompts]  # outside the lock: hashing a long prompt takes a while
        with self._lock:
            for prompt, key in zip(prompts, keys, strict=True):
                tokens = self._entries.get(key)
                if tokens is None:
                    missing.append(prompt)
                else:
                    found[prompt] = tokens
                    self._entries.move_to_end(key)
        return found, missing

    def store(self, prompt: str, length: int, ids: Sequence[int]) -> PromptTokens:
        """Remember a prompt's token count and the end of its `ids`; the least recently used go to make room."""
        tokens = PromptTokens(length, array("i", ids[-self.keep :]))
        if tokens.size > self.max_bytes:
            return tokens
        key = _digest(prompt)
        with self._lock:
            previous = self._entries.pop(key, None)
            self.bytes += tokens.size - (previous.size if previous else 0)
            self._entries[key] = tokens
            while self.bytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self.bytes -= evicted.size
        return tokens

    def __len__(self) -> int:
        return len(self._entries)


def _digest(prompt: str) -> bytes:
    # surrogatepass: JSON may carry a lone surrogate (`"\ud800"`), which strict UTF-8 refuses to encode.
    return hashlib.blake2b(prompt.encode("utf-8", "surrogatepass"), digest_size=16).digest()
