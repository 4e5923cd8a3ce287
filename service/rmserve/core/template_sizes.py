"""How large the result of a template operation may get, known before it runs.

Most of what a template can do makes a result no larger than a few times its operands, which the
budget already paid for; these are the exceptions, whose result grows with an argument: repetition
(`"x" * n`), widths (`center`, `ljust`, format specs, `indent`), `replace`, `join`, `batch`,
`slice`, JSON indentation, wrapping, and integers (big-integer arithmetic runs in one step nothing
interrupts). Each bound raises BudgetExceeded for an argument no chat template needs.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from rmserve.core.template_budget import BudgetExceeded, allocated, text_size

MAX_WIDTH = 1000  # a width, precision or count of batches a template may ask for
MAX_JSON_INDENT = 16
MAX_INT_BITS = 4096

# A %-format directive; a width or precision beyond MAX_WIDTH, or taken from the arguments (`*`), is refused.
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d*)(?:\.(\*|\d*))?")
_NUMBER = re.compile(r"\d+")


def width(value: object) -> int:
    """A width given as a number or as the string repeated (`indent("  ")`), at most MAX_WIDTH."""
    size = len(value) if isinstance(value, str) else value if isinstance(value, int) else 0
    if size > MAX_WIDTH:
        raise BudgetExceeded(f"a width or count over {MAX_WIDTH}")
    return size


def format_size(pattern: str, arguments: Iterable[object], percent: bool, limit: int) -> int:
    """`pattern % arguments` (`percent`) or `pattern.format(*arguments)`."""
    if percent:
        numbers = [number for match in _PERCENT_SPEC.finditer(pattern) for number in match.groups() if number]
    else:
        specs = [spec or "" for _, _, spec, _ in string.Formatter().parse(pattern)]
        if any("{" in spec for spec in specs):
            raise BudgetExceeded("a format field takes its width from the arguments")
        numbers = [number for spec in specs for number in _NUMBER.findall(spec)]
    if "*" in numbers or any(int(number) > MAX_WIDTH for number in numbers):
        raise BudgetExceeded(f"a format width or precision over {MAX_WIDTH}")
    return len(pattern) + MAX_WIDTH * len(numbers) + sum(text_size(argument, limit) for argument in arguments)


def replace_size(text: object, old: object, new: object, count: object) -> int:
    text, old, new = str(text), str(old), str(new)
    occurrences = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        occurrences = min(occurrences, count)
    return len(text) + occurrences * max(0, len(new) - len(old))


def join_size(items: Sequence[object], separator: object, limit: int) -> int:
    return sum(text_size(item, limit) for item in items) + text_size(separator, limit) * len(items)


def _indent_size(text: object, indent: object, limit: int) -> int:
    lines = text.count("\n") + 1 if isinstance(text, str) else text_size(text, limit)
    return text_size(text, limit) + lines * width(indent)


def _json_indent(indent: object) -> int:
    """Only the indentation can make JSON much longer than its text (charged when the filter starts)."""
    if indent is not None and width(indent) > MAX_JSON_INDENT:
        raise BudgetExceeded(f"a JSON indent over {MAX_JSON_INDENT}")
    return 0


def _numbers_only(start: object) -> int:
    if not isinstance(start, int | float):
        raise BudgetExceeded("sum adds numbers (adding up lists or text takes quadratic time)")
    return 0


# Filter name -> the size of its result from its bound arguments (by the names of Jinja's own parameters).
FILTER_SIZES: dict[str, Callable[[Mapping[str, Any], int], int]] = {
    "center": lambda a, limit: max(text_size(a["value"], limit), width(a["width"])),
    "indent": lambda a, limit: _indent_size(a["s"], a["width"], limit),
    "replace": lambda a, _: replace_size(a["s"], a["old"], a["new"], a["count"]),
    "format": lambda a, limit: format_size(a["value"], [*a["args"], *a["kwargs"].values()], True, limit),
    "join": lambda a, limit: join_size(a["value"], a["d"], limit),
    "batch": lambda a, _: 64 * width(a["linecount"]),
    "slice": lambda a, _: 64 * width(a["slices"]),
    "tojson": lambda a, _: _json_indent(a["indent"]),
    "wordwrap": lambda a, limit: text_size(a["s"], limit) * (1 + text_size(a["wrapstring"] or "\n", limit)),
    "sum": lambda a, _: _numbers_only(a["start"]),
}


def _padded(text: str, args: tuple[Any, ...], kwargs: Mapping[str, Any], limit: int) -> int:
    return max(len(text), width(args[0] if args else kwargs.get("width", 0)))


def _tabs_expanded(text: str, args: tuple[Any, ...], kwargs: Mapping[str, Any], limit: int) -> int:
    return len(text) + text.count("\t") * width(args[0] if args else kwargs.get("tabsize", 8))


def _replaced(text: str, args: tuple[Any, ...], kwargs: Mapping[str, Any], limit: int) -> int:
    if len(args) < 2:  # str.replace takes old and new by position: the call fails on its own
        return 0
    return replace_size(text, args[0], args[1], args[2] if len(args) > 2 else kwargs.get("count", -1))


# str method name -> the size of its result (text, args, kwargs, limit), for those whose result grows with an argument.
STR_METHOD_SIZES: dict[str, Callable[[str, tuple[Any, ...], Mapping[str, Any], int], int]] = {
    "center": _padded,
    "ljust": _padded,
    "rjust": _padded,
    "zfill": _padded,
    "expandtabs": _tabs_expanded,
    "replace": _replaced,
    "join": lambda text, args, _, limit: join_size(args[0], text, limit),
    "format": lambda text, args, kwargs, limit: format_size(text, [*args, *kwargs.values()], False, limit),
    "format_map": lambda text, args, _, limit: format_size(text, args[0].values(), False, limit),
}


def operation_size(operator: str, left: object, right: object, limit: int) -> int:
    """The size of `left <operator> right` for the operators the sandbox intercepts (* ** + %)."""
    if isinstance(left, int) and isinstance(right, int):
        bits = max(left.bit_length(), right.bit_length()) + 1
        if operator == "*":
            bits = left.bit_length() + right.bit_length()
        elif operator == "**":
            bits = left.bit_length() * max(right, 0)
        if bits > MAX_INT_BITS:
            raise BudgetExceeded(f"an integer of more than {MAX_INT_BITS} bits")
        return bits // 8
    if operator == "*":
        sequence, times = (left, right) if isinstance(right, int) else (right, left)
        if isinstance(sequence, str | list | tuple) and isinstance(times, int):
            return allocated(sequence) * max(times, 0)
    if operator == "+":
        return text_size(left, limit) + text_size(right, limit)
    if operator == "%" and isinstance(left, str):
        arguments = right if isinstance(right, tuple) else right.values() if isinstance(right, Mapping) else [right]
        return format_size(left, arguments, True, limit)
    return 0
