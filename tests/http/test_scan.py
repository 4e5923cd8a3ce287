"""The raw-bytes pre-scan: depth, entries and number size refused before parsing, naming the field."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rmserve.errors import InvalidField, PayloadTooLarge, ServiceError
from rmserve.http.scan import MAX_NUMBER_DIGITS, check_exactly, check_shape, plainly_within


def refusal(body: object, max_entries: int = 512, **limits: int) -> ServiceError | None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    try:
        check_shape(raw, max_entries, **limits)
    except ServiceError as error:
        return error
    return None


def test_ordinary_bodies_pass() -> None:
    assert refusal({"items": [{"messages": [{"role": "user", "content": "[[{{1234"}]}]}) is None
    assert refusal({"prompt": 'a "quoted" \\ [text] {x}', "responses": ["9" * 500]}) is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"items": [0] * 600}, "items"),
        ({"a": [1], "items": [{"prompt": "x"}, {"messages": [{}] * 600}]}, "items[1].messages"),
        ({f"k{i}": i for i in range(600)}, "body"),
        ({'we"ird\\': list(range(600))}, 'we"ird\\'),
    ],
)
def test_too_many_entries_is_413_naming_the_container(body: object, field: str) -> None:
    error = refusal(body)
    assert isinstance(error, PayloadTooLarge) and error.field == field
    assert "RMSERVE_MAX_ITEMS" in error.message


def test_deep_nesting_is_422_naming_where_it_gets_too_deep() -> None:
    error = refusal({"a": [1, 2], "b": {"c": [[[[]]]]}}, max_depth=3)
    assert isinstance(error, InvalidField) and error.field == "b.c[0]"
    hostile = refusal(b"[" * 100_000 + b"]" * 100_000)
    assert isinstance(hostile, InvalidField) and hostile.field == "[0]" * 32


def test_a_huge_number_is_422_naming_the_field() -> None:
    raw = b'{"items": [{"prompt": "a"}, {"prompt": "b", "response": -' + b"9" * 5000 + b"}]}"
    error = refusal(raw)
    assert isinstance(error, InvalidField) and error.field == "items[1].response"
    assert "5000 digits" in error.message


def test_digits_and_brackets_inside_strings_are_text() -> None:
    assert refusal({"prompt": "[" * 100 + "9" * 1000 + '\\"[' * 50}, max_depth=2) is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5),
    max_leaves=30,
)


def depth_of(value: object) -> int:
    if isinstance(value, list):
        return 1 + max((depth_of(child) for child in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth_of(child) for child in value.values()), default=0)
    return 0


def widest(value: object) -> int:
    if isinstance(value, list):
        return max([len(value), *(widest(child) for child in value)])
    if isinstance(value, dict):
        return max([len(value), *(widest(child) for child in value.values())])
    return 0


@settings(max_examples=150, deadline=None)
@given(value=json_values, max_depth=st.integers(1, 4), max_entries=st.integers(1, 4))
def test_the_scan_agrees_with_the_parsed_value(value: object, max_depth: int, max_entries: int) -> None:
    """Whatever the strings hold, the scan refuses exactly the bodies a walk of the parsed value would."""
    error = refusal(value, max_entries=max_entries, max_depth=max_depth)
    if depth_of(value) > max_depth:
        assert isinstance(error, InvalidField) and "deeper" in error.message
    elif widest(value) > max_entries:
        assert isinstance(error, PayloadTooLarge)
    else:
        assert error is None


@settings(max_examples=150, deadline=None)
@given(value=json_values, max_depth=st.integers(1, 4), max_entries=st.integers(1, 4), max_digits=st.integers(1, 20))
def test_the_shortcut_passes_only_bodies_the_exact_scan_passes(
    value: object, max_depth: int, max_entries: int, max_digits: int
) -> None:
    """The byte counts that let most bodies skip the scan never let through one the scan would refuse."""
    raw = json.dumps(value).encode()
    if plainly_within(raw, max_entries, max_depth, max_digits):
        check_exactly(raw, max_entries, max_depth, max_digits)  # raises if the shortcut was wrong


def test_an_rl_sample_takes_the_shortcut_and_a_hostile_body_does_not() -> None:
    sample = {"items": [{"prompt": "Human: what is 2, 3, [4]?", "response": "Assistant: 9, {10}."}]}
    assert plainly_within(json.dumps(sample).encode(), 512, 32, MAX_NUMBER_DIGITS)
    assert not plainly_within(json.dumps({"items": [0] * 600}).encode(), 512, 32, MAX_NUMBER_DIGITS)
    assert not plainly_within(b"[" * 33 + b"]" * 33, 512, 32, MAX_NUMBER_DIGITS)
    assert not plainly_within(b"[" + b"9" * 101 + b"]", 512, 32, MAX_NUMBER_DIGITS)
