"""Is what a command printed what the page shows?

JSON (a document, or one per line) is compared value by value: a number matches to the digits the
page shows (`0.439` is anything that rounds to it); `...` stands for any value, for any further
members of an object, or, alone in a list, for any list; a string ending in `...` for any string
with that start; a `request_id` of 32 hex digits for any generated one. Text is compared line by line: a line `...`
stands for any lines, `...` inside a line for anything. In shape mode (a trained model's numbers
differ from run to run) every number matches any number, and a row of dashes any row of dashes.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tests.docs.blocks import Output

ANY = "\u2026"  # what a bare `...` in shown JSON becomes
STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
HEX_ID = r"[0-9a-f]{32}"  # a generated request ID
NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?"


class Shown(float):
    """A number as a page prints it, remembering how many decimals it shows."""

    decimals: int

    def __new__(cls, text: str) -> Shown:
        number = super().__new__(cls, text)
        number.decimals = len(text.partition(".")[2].partition("e")[0])
        return number


def shown_json(text: str) -> Any:
    """Parse JSON as a page shows it, `...` included."""
    return json.loads(_unelide(text), parse_float=Shown)


def _unelide(text: str) -> str:
    """Bare `...` -> a string JSON can hold: a member `"…": "…"` in an object, a value `"…"` elsewhere."""
    pieces: list[str] = []
    open_brackets: list[str] = []
    index = 0
    while index < len(text):
        if (string := STRING.match(text, index)) is not None:
            pieces.append(string.group())
            index = string.end()
        elif text.startswith("...", index):
            before = "".join(pieces).rstrip()[-1:]
            member = open_brackets[-1:] == ["{"] and before in ("{", ",")
            pieces.append(f'"{ANY}": "{ANY}"' if member else f'"{ANY}"')
            index += 3
        else:
            char = text[index]
            if char in "[{":
                open_brackets.append(char)
            elif char in "]}":
                open_brackets.pop()
            pieces.append(char)
            index += 1
    return "".join(pieces)


def assert_shown(expected: Any, actual: Any, where: str = "", shape: bool = False) -> None:
    """`actual` is what the page shows as `expected` (see the module's docstring)."""
    if expected == ANY:
        return
    if isinstance(expected, float | int) and not isinstance(expected, bool) and shape:
        assert isinstance(actual, float | int) and not isinstance(actual, bool), f"{where}: a number, got {actual!r}"
    elif isinstance(expected, Shown):
        tolerance = 0.5 * 10.0**-expected.decimals + 1e-6  # rounding, plus float32 noise between batches
        assert abs(actual - expected) <= tolerance, f"{where}: the page shows {expected}, got {actual}"
    elif isinstance(expected, str) and expected.endswith("...") and isinstance(actual, str):
        assert actual.startswith(expected[:-3]), f"{where}: the page shows {expected!r}, got {actual!r}"
    elif isinstance(expected, dict):
        _assert_members(expected, actual, where, shape)
    elif isinstance(expected, list):
        if expected == [ANY]:
            assert isinstance(actual, list), f"{where}: a list, got {actual!r}"
            return
        assert isinstance(actual, list) and len(actual) == len(expected), f"{where}: shows {expected}, got {actual}"
        for index, (value, got) in enumerate(zip(expected, actual, strict=True)):
            assert_shown(value, got, f"{where}[{index}]", shape)
    else:
        assert actual == expected, f"{where}: the page shows {expected!r}, got {actual!r}"


def _assert_members(expected: dict[str, Any], actual: Any, where: str, shape: bool) -> None:
    assert isinstance(actual, dict), f"{where}: the page shows an object, got {actual!r}"
    keys = set(expected) - {ANY}
    if ANY in expected:
        assert keys <= set(actual), f"{where}: the page shows keys {sorted(keys)}, got {sorted(actual)}"
    else:
        assert keys == set(actual), f"{where}: the page shows keys {sorted(keys)}, got {sorted(actual)}"
    for key in keys:
        if key == "request_id" and re.fullmatch(HEX_ID, expected[key]):  # generated per request
            assert re.fullmatch(HEX_ID, actual[key]), f"{where}.request_id: {actual[key]!r}"
        else:
            assert_shown(expected[key], actual[key], f"{where}.{key}", shape)


def assert_output(output: Output, printed: str, where: str) -> None:
    """What a block printed is what the page shows below it."""
    if output.language == "json":
        try:
            documents = [shown_json(output.text)]
            answers = [json.loads(printed)]
        except json.JSONDecodeError:  # one document per line
            documents = [shown_json(line) for line in output.text.splitlines() if line.strip()]
            answers = [json.loads(line) for line in printed.splitlines() if line.strip()]
        assert len(answers) == len(documents), f"{where}: the page shows {len(documents)} lines, got:\n{printed}"
        for number, (expected, actual) in enumerate(zip(documents, answers, strict=True), start=1):
            assert_shown(expected, actual, f"{where} line {number}", output.shape)
    else:
        shown_lines = output.text.strip("\n").splitlines()
        printed_lines = [line.rstrip() for line in printed.strip("\n").splitlines()]
        matches = _lines_match(shown_lines, printed_lines, output.shape)
        assert matches, f"{where}: the page shows\n{output.text}\ngot\n{printed}"


def _lines_match(shown: list[str], printed: list[str], shape: bool) -> bool:
    if not shown:
        return not printed
    if shown[0].strip() == "...":
        return any(_lines_match(shown[1:], printed[skip:], shape) for skip in range(len(printed) + 1))
    return bool(printed) and _line_matches(shown[0], printed[0], shape) and _lines_match(shown[1:], printed[1:], shape)


def _line_matches(shown: str, printed: str, shape: bool) -> bool:
    shown = shown.rstrip()
    if shape and shown and set(shown) == {"-"}:
        return bool(re.fullmatch(r"-+", printed))
    pattern = ".*".join(
        NUMBER.join(re.escape(piece) for piece in re.split(NUMBER, part)) if shape else re.escape(part)
        for part in shown.split("...")
    )
    return re.fullmatch(pattern, printed) is not None
