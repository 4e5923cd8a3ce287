"""Text windows: a long text is tokenized only as far as it can reach the model, and what reaches it is unchanged."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from rmserve.core.conversation import Exchange, Turn
from rmserve.core.formats import InputFormat, TranscriptFormat, load_format
from rmserve.core.text_window import MARGIN, Side, TextWindow
from rmserve.core.tokenizer import plain
from tests.conftest import DEFAULT_REPOSITORY
from tests.hf_checkpoints import QWEN2_TEMPLATE, _tokenizer
from tests.tiny_model import TOKENS, train_tokenizer


def shipped(name: str) -> Tokenizer:
    return plain(Tokenizer.from_file(str(DEFAULT_REPOSITORY / name / "1" / "tokenizer.json")))


# Byte-level BPE (the tiny test model's and hh-harmless's) and WordPiece (hh-harmless-minilm: it drops whitespace
# and reads a word of over 100 characters as one [UNK]).
TOKENIZERS = {
    "tiny BPE": plain(train_tokenizer()),
    "hh-harmless": shipped("hh-harmless"),
    "hh-harmless-minilm": shipped("hh-harmless-minilm"),
}

# Pieces that make cuts hard: words, runs of one character (one long word, one long run of whitespace), punctuation,
# combining accents and wide characters, whitespace of every kind.
piece = st.one_of(
    st.sampled_from(["bread ", "Knead", " the", "?", "...", "e\u0301", "\u00e9t\u00e9 ", "\u4e2d\u6587", "\r\n", "\t"]),
    st.tuples(st.sampled_from(["a", " ", "\n", "x1", "=", "\u0301", "\u3000", "ab "]), st.integers(1, 3000)).map(
        lambda run: run[0] * run[1]
    ),
)
texts = st.lists(piece, max_size=40).map("".join)


def ids(tokenizer: Tokenizer, text: str) -> list[int]:
    return tokenizer.encode_batch_fast([text], add_special_tokens=False)[0].ids


@pytest.mark.parametrize("name", TOKENIZERS)
@settings(max_examples=150, deadline=None)
@given(text=texts, keep=st.integers(4, 64), side=st.sampled_from(["start", "end"]))
def test_the_kept_tokens_are_the_whole_texts_own(name: str, text: str, keep: int, side: Side) -> None:
    tokenizer = TOKENIZERS[name]
    (windowed,) = TextWindow(tokenizer, keep).encode([text], side)
    whole = ids(tokenizer, text)
    if not windowed.cut:
        assert windowed.text == text and windowed.encoding.ids == whole
        return
    assert len(whole) > keep  # so the model reads it cut, and says so
    assert (text.startswith if side == "start" else text.endswith)(windowed.text)
    if side == "start":
        assert windowed.encoding.ids[:keep] == whole[:keep]
    elif not text[-len(windowed.text) - 1].isspace() and windowed.text[0].isspace():  # where whitespace starts
        assert windowed.encoding.ids[-keep:] == whole[-keep:]


def test_a_long_text_is_tokenized_only_as_far_as_the_model_reads() -> None:
    window = TextWindow(TOKENIZERS["tiny BPE"], 64)
    responses = ["Knead the dough and bake it. " * 2300, "a" * 65_000, "\n" * 65_000 + "b"]
    for windowed in window.encode(responses, "start"):
        assert windowed.cut
        assert len(windowed.text) <= window.first_chars
        assert len(windowed.encoding) <= window.first_chars  # tokens: a small multiple of max_length, not 65k
        assert len(windowed.encoding) > 64 + MARGIN


def test_a_tokenizer_that_drops_whitespace_gets_a_wider_window() -> None:
    tokenizer = TOKENIZERS["hh-harmless-minilm"]
    text = "a" + " " * 65_000 + "b"  # two tokens: it fits any model whole
    (windowed,) = TextWindow(tokenizer, 64).encode([text], "start")
    assert not windowed.cut and windowed.encoding.ids == ids(tokenizer, text)


def formats(max_length: int) -> list[InputFormat]:
    """A format of each style: a chat template (byte-level BPE), a WordPiece pair model, a transcript model."""
    chat_template = {
        "style": "chat_template",
        "template": QWEN2_TEMPLATE,
        "special_tokens": {"eos_token": "<|im_end|>"},
    }
    chat_tokenizer = _tokenizer(["<|endoftext|>", "<|unk|>", "<|im_start|>", "<|im_end|>"])
    minilm = DEFAULT_REPOSITORY / "hh-harmless-minilm" / "1" / "tokenizer.json"
    return [
        load_format(chat_template, chat_tokenizer, max_length, TOKENS),
        load_format({"style": "pair"}, Tokenizer.from_file(str(minilm)), max_length, TOKENS),
        load_format({"style": "text", "eos_token": "[SEP]"}, Tokenizer.from_file(str(minilm)), max_length, TOKENS),
        load_format({"style": "transcript"}, train_tokenizer(), max_length, TOKENS),
    ]


FORMATS = formats(48)


def unwindowed(input_format: InputFormat) -> InputFormat:
    """The same format with a window no text is longer than: it tokenizes every text whole."""
    whole = copy.copy(input_format)
    holder: Any = whole  # the object that holds the window: the format, or a transcript format's encoder
    if isinstance(whole, TranscriptFormat):
        holder = whole.encoder = copy.copy(whole.encoder)
    holder.window = TextWindow(holder.window.tokenizer, 10**9)
    return whole


@settings(max_examples=40, deadline=None)
@given(turns=st.lists(texts, min_size=1, max_size=3), response=texts)
def test_every_input_format_reads_long_texts_as_if_tokenized_whole(turns: list[str], response: str) -> None:
    exchange = Exchange(tuple(Turn(("user", "assistant")[i % 2], text) for i, text in enumerate(turns)), response, "x")
    for input_format in FORMATS:
        (windowed_encoding,), (whole_encoding,) = (
            input_format.encode([exchange]),
            unwindowed(input_format).encode([exchange]),
        )
        assert windowed_encoding.input_ids == whole_encoding.input_ids, input_format.style
        assert windowed_encoding.truncated == whole_encoding.truncated
        if not whole_encoding.truncated:
            assert windowed_encoding == whole_encoding
