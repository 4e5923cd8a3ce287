"""Pair encoding: layout, truncation that keeps the prompt's end and the response, reported."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from rmserve.core.tokenizer import PairEncoder, PromptCache, PromptTokens, SpecialTokens
from tests.tiny_model import TOKENS, train_tokenizer

TOKENIZER = train_tokenizer()


def encoder(max_length: int = 32, special: SpecialTokens = TOKENS) -> PairEncoder:
    return PairEncoder(train_tokenizer(), max_length, special)


def ids(text: str) -> list[int]:
    return TOKENIZER.encode(text, add_special_tokens=False).ids


def test_layout_is_bos_prompt_sep_response_eos() -> None:
    (encoding,) = encoder().encode(["How do I bake bread?"], ["Knead it."])
    assert encoding.input_ids == [2, *ids("How do I bake bread?"), 3, *ids("Knead it."), 3]
    assert not encoding.truncated


def test_long_prompt_keeps_its_end_and_the_whole_response() -> None:
    prompt = " ".join(f"turn{n}" for n in range(200)) + " final question"
    (encoding,) = encoder(32).encode([prompt], ["short answer"])
    response = ids("short answer")
    assert encoding.truncated
    assert len(encoding.input_ids) == 32
    assert encoding.input_ids[-len(response) - 1 : -1] == response
    prompt_ids = ids(prompt)
    kept_prompt = encoding.input_ids[1 : encoding.input_ids.index(3)]
    assert kept_prompt == prompt_ids[-len(kept_prompt) :]  # the end of the prompt, not the start


def test_long_response_still_leaves_the_prompt_a_share() -> None:
    (encoding,) = encoder(40).encode(["the question " * 20], ["word " * 200])
    assert encoding.truncated and len(encoding.input_ids) == 40
    separator = encoding.input_ids.index(3)
    assert separator - 1 >= int((40 - 3) * 0.25)  # prompt tokens kept


def test_without_special_tokens() -> None:
    plain = SpecialTokens(pad_id=0, bos_id=None, sep_id=None, eos_id=None)
    (encoding,) = encoder(32, plain).encode(["ab"], ["cd"])
    assert encoding.input_ids == ids("ab") + ids("cd")


@settings(max_examples=100, deadline=None)
@given(prompt=st.text(max_size=400), response=st.text(max_size=400), max_length=st.integers(8, 80))
def test_never_longer_than_max_length_and_truncation_is_honest(prompt: str, response: str, max_length: int) -> None:
    (encoding,) = PairEncoder(TOKENIZER, max_length, TOKENS).encode([prompt], [response])
    assert len(encoding.input_ids) <= max_length
    full = len(ids(prompt)) + len(ids(response)) + TOKENS.count
    assert encoding.truncated == (full > max_length)
    if not encoding.truncated:
        assert len(encoding.input_ids) == full


def test_a_repeated_prompt_encodes_the_same_from_the_cache() -> None:
    prompt = " ".join(f"turn{n}" for n in range(200)) + " final question"
    pair_encoder = encoder(32)
    cold = pair_encoder.encode([prompt, "short"], ["short answer", "a much longer answer " * 4])
    warm = pair_encoder.encode([prompt, "short"], ["short answer", "a much longer answer " * 4])
    assert warm == cold
    assert warm == encoder(32).encode([prompt, "short"], ["short answer", "a much longer answer " * 4])


def test_the_prompt_cache_forgets_the_least_recently_used() -> None:
    cache = PromptCache(size=2, keep=3)
    cache.store("a", [1, 2, 3, 4])
    cache.store("b", [5])
    cache.lookup(["a"])  # "a" is now the most recent
    cache.store("c", [6])
    found, missing = cache.lookup(["a", "b", "c"])
    assert missing == ["b"]
    assert found["a"] == PromptTokens(length=4, tail=[2, 3, 4])
