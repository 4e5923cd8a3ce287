"""Only the part of a text that can still reach the model is tokenized: a window of characters at the kept end.

A model reads at most `max_length` tokens of a response (its start) or of a prompt (its end), so a
64k-character response need not cost 16k tokens of work and memory. A window is cut from the kept end
and tokenized. It stands for the whole text only if it is the whole text, or if it holds more than
`keep + MARGIN` tokens: then the text holds more than `keep` (so the model reads it cut, and says so),
and the `keep` tokens at the kept end are the text's own. A window is cut where a run of whitespace
starts, so no word is cut in two; where there is no such place, only tokens next to the cut can
differ from the whole text's (WordPiece reads a word of over 100 characters as one `[UNK]`, its cut
part as up to 100 pieces), and MARGIN tokens lie between them and the kept ones. The one exception: a
prompt whose last window of characters is one unbroken run (no word followed by whitespace: `"a" * 65000`,
65,000 spaces), whose kept end byte-level BPE may group differently, as it pairs a run's characters from
its start.

The first window holds `(keep + MARGIN) * longest token` characters: every token covers at most that
many characters of a text its tokenizer drops nothing from (byte-level BPE). A tokenizer that drops
characters (BERT's drops whitespace and control characters) can read such a window as fewer tokens;
the window doubles until it holds enough tokens or the whole text, so the answer never depends on
the estimate, only the work does.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import tokenizers
from tokenizers import Tokenizer

# Tokens between the kept ones and a window's cut: more than any cut can change (WordPiece: 100, its word limit).
MARGIN = 128
# Characters of windows tokenized in one call: bounds the tokens a request holds at once (about 100 bytes each).
CHUNK_CHARS = 1 << 17
Side = Literal["start", "end"]  # which end of a text the model reads: a response's start, a prompt's end
# The last run of whitespace after a word (a response's window ends before it), and the first (a prompt's starts at
# it); matched from a position, so each runs in time linear in the window.
_LAST_BREAK = re.compile(r"(?s:.*)\S(?=\s)")
_FIRST_BREAK = re.compile(r"\S(?=\s)")


@dataclass(frozen=True)
class Windowed:
    """A text's window and its tokens; `cut`: the window is part of the text, which holds more than `keep` tokens."""

    text: str
    encoding: tokenizers.Encoding
    cut: bool


class TextWindow:
    """Cuts texts to the window that can reach a model reading `keep` tokens of each, and tokenizes them."""

    def __init__(self, tokenizer: Tokenizer, keep: int):
        self.tokenizer = tokenizer  # with truncation and padding off (rmserve.core.tokenizer.plain)
        self.keep = keep
        longest = max((len(token) for token in tokenizer.get_vocab(with_added_tokens=True)), default=1)
        self.first_chars = (keep + MARGIN) * max(longest, 1)

    def encode(self, texts: Sequence[str], side: Side) -> Iterator[Windowed]:
        """Each text's window and its tokens (no special tokens), in order, tokenized about CHUNK_CHARS characters at
        a time: a caller that keeps only what it needs of each holds one chunk's tokens at once, however many texts."""
        start = 0
        while start < len(texts):
            end, chars = start + 1, min(len(texts[start]), self.first_chars)
            while end < len(texts) and chars + min(len(texts[end]), self.first_chars) <= CHUNK_CHARS:
                chars += min(len(texts[end]), self.first_chars)
                end += 1
            yield from self._encode_chunk(texts[start:end], side)
            start = end

    def _encode_chunk(self, texts: Sequence[str], side: Side) -> list[Windowed]:
        """In one batch call per round of doubling."""
        windowed: list[Windowed | None] = [None] * len(texts)
        pending, chars = list(range(len(texts))), self.first_chars
        while pending:
            windows = [cut(texts[index], chars, side) for index in pending]
            encodings = self.tokenizer.encode_batch_fast(windows, add_special_tokens=False)
            short = []
            for index, window, encoding in zip(pending, windows, encodings, strict=True):
                whole = len(window) == len(texts[index])
                if whole or len(encoding) > self.keep + MARGIN:
                    windowed[index] = Windowed(window, encoding, cut=not whole)
                else:
                    short.append(index)  # too few tokens for so many characters: the tokenizer dropped some
            pending, chars = short, 2 * chars
        return [window for window in windowed if window is not None]


def cut(text: str, chars: int, side: Side) -> str:
    """At most `chars` characters of `text` from its `side`, cut where a run of whitespace starts, so no word is cut
    in two: a response's window ends at the last such place in its second half (else at `chars`: byte-level BPE
    pairs a long word's characters from its start, so its start tokenizes the same), a prompt's starts at the first
    such place in it (else at `chars`, the one cut that can group a long word's last characters differently)."""
    if len(text) <= chars:
        return text
    if side == "start":
        word_end = _LAST_BREAK.match(text, chars // 2, chars)
        return text[: word_end.end() if word_end else chars]
    start = len(text) - chars
    word_end = _FIRST_BREAK.search(text, start)
    return text[word_end.end() if word_end else start :]
