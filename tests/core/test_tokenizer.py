"""Pair encoding: layout, truncation that keeps the prompt's end and the response, reported."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from rmserve.core.prompt_cache import PromptCache
from rmserve.core.tokenizer import PairEncoder, SpecialTokens, fit_pair
from tests.core.test_text_window import texts
from tests.tiny_model import TOKENS, train_tokenizer

TOKENIZER = train_tokenizer()
CACHE_BYTES = 1024 * 1024


def encoder(max_length: int = 32, special: SpecialTokens = TOKENS) -> PairEncoder:
    return PairEncoder(train_tokenizer(), max_length, special, CACHE_BYTES)


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


@settings(max_examples=100, deadline=None)
@given(prompt=texts, response=texts, max_length=st.integers(8, 80))
def test_long_texts_encode_as_if_tokenized_whole(prompt: str, response: str, max_length: int) -> None:
    """Only windows of long texts are tokenized (rmserve.core.text_window); the model reads the same tokens."""
    (encoding,) = PairEncoder(TOKENIZER, max_length, TOKENS).encode([prompt], [response])
    prompt_ids, response_ids = ids(prompt), ids(response)
    prompt_kept, response_kept = fit_pair(len(prompt_ids), len(response_ids), max_length - TOKENS.count)
    kept_prompt = prompt_ids[len(prompt_ids) - prompt_kept :]
    assert encoding.input_ids == [2, *kept_prompt, 3, *response_ids[:response_kept], 3]
    assert encoding.truncated == (prompt_kept < len(prompt_ids) or response_kept < len(response_ids))
    assert encoding.response_tokens == len(response_ids) or encoding.response_tokens > max_length


def test_the_prompt_cache_forgets_the_least_recently_used() -> None:
    one_entry = PromptCache(CACHE_BYTES, keep=3)
    size = one_entry.store("a", 4, [1, 2, 3, 4]).size
    cache = PromptCache(2 * size, keep=3)
    cache.store("a", 4, [1, 2, 3, 4])
    cache.store("b", 1, [5])
    cache.lookup(["a"])  # "a" is now the most recent
    cache.store("c", 1, [6])
    found, missing = cache.lookup(["a", "b", "c"])
    assert missing == ["b"]
    assert (found["a"].length, found["a"].tail.tolist()) == (4, [2, 3, 4])


def test_the_prompt_cache_holds_long_prompts_within_its_bytes() -> None:
    pair_encoder = PairEncoder(TOKENIZER, 64, TOKENS, prompt_cache_bytes=64 * 1024)
    for index in range(300):
        pair_encoder.encode([f"prompt {index} " + "and so on " * 6500], ["ok"])  # 65k characters each
    cache = pair_encoder.prompt_cache
    assert cache.bytes <= 64 * 1024
    assert 0 < len(cache) < 300
    recent = "prompt 299 " + "and so on " * 6500
    assert cache.lookup([recent])[1] == []  # the most recent prompt is still there
