"""A pre-scan of a JSON body's raw bytes, so limits apply before parsing costs anything.

Nesting depth, entries per array or object, and digits per number are checked with a few
vectorised passes over the bytes (memory a small multiple of the body), before `json.loads`
builds objects and long before validation could collect an error per element. A refusal
names the field the way the client wrote it (`items[3].prompt`), found from the bytes too.

Most bodies (one RL sample, a GRPO group) are proven within every limit by three byte counts
first, each one C-speed pass: no container can have more entries than the body has commas plus
one, none can nest deeper than the body has `[` and `{`, no number can have more digits than the
body. Only a body that fails one of these pays for the exact scan, which decides its answer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from rmserve.errors import InvalidField, PayloadTooLarge

MAX_DEPTH = 32  # request bodies nest 4 deep ({"items": [{"messages": [{...}]}]})
MAX_NUMBER_DIGITS = 100  # no field needs more; Python refuses ints past 4,300 digits anyway

QUOTE, BACKSLASH, COMMA, OPEN_ARRAY = ord('"'), ord("\\"), ord(","), ord("[")
DIGITS = b"0123456789"


@dataclass(frozen=True)
class _Structure:
    """Where the body's structure is: quotes, containers and commas outside strings."""

    data: np.ndarray  # [bytes] uint8
    outside: np.ndarray  # [bytes] bool: not inside a string literal
    quotes: np.ndarray  # positions of the quotes that open or close strings
    structural: np.ndarray  # positions of [ { ] } and commas outside strings, in order
    depth: np.ndarray  # [structural] containers open after each of them
    opens: np.ndarray  # positions of [ and {, in order
    open_keys: np.ndarray  # (level, position) of each opener as one sortable int, sorted
    comma_keys: np.ndarray  # the same for commas, level = the container they separate entries of
    levels: np.ndarray  # [opens] nesting level of each opener (1 = the top-level value)
    entries: np.ndarray  # [opens] entries of each container (0 or 1 when it has no comma)

    def key(self, level: int | np.ndarray, position: int | np.ndarray) -> np.ndarray:
        return np.asarray(level, dtype=np.int64) * (len(self.data) + 1) + position


def check_shape(raw: bytes, max_entries: int, max_depth: int = MAX_DEPTH, max_digits: int = MAX_NUMBER_DIGITS) -> None:
    """Refuse a body nested too deep (422), with a container over `max_entries` (413), or a number
    over `max_digits` digits (422); each error names the field."""
    if raw and not plainly_within(raw, max_entries, max_depth, max_digits):
        check_exactly(raw, max_entries, max_depth, max_digits)


def check_exactly(raw: bytes, max_entries: int, max_depth: int, max_digits: int) -> None:
    """`check_shape` without the shortcut: where every container, and every number, is."""
    structure = _scan(raw, max_depth)
    too_deep = np.flatnonzero(structure.levels > max_depth)
    if too_deep.size:
        position = int(structure.opens[too_deep[0]])
        raise InvalidField(_path(structure, position), f"nests deeper than {max_depth} levels of arrays and objects")
    too_many = np.flatnonzero(structure.entries > max_entries)
    if too_many.size:
        index = too_many[0]
        position = int(structure.opens[index])
        field = _path(structure, position)
        raise PayloadTooLarge(
            f"{field} has {structure.entries[index]} entries; the limit is {max_entries} per request "
            "(RMSERVE_MAX_ITEMS); split the request",
            field=field,
        )
    starts, ends = _runs(structure.outside & (structure.data >= ord("0")) & (structure.data <= ord("9")))
    too_long = np.flatnonzero(ends - starts > max_digits)
    if too_long.size:
        index = too_long[0]
        position = int(starts[index])
        while position > 0 and structure.data[position - 1] in b"-.eE+0123456789":
            position -= 1  # the start of the number, not of its digit run
        raise InvalidField(
            _path(structure, position),
            f"is a number of {ends[index] - starts[index]} digits; numbers here have at most {max_digits}",
        )


def plainly_within(raw: bytes, max_entries: int, max_depth: int, max_digits: int) -> bool:
    """True when byte counts alone prove `raw` within every limit (False: only the exact scan can tell)."""
    return (
        raw.count(b",") < max_entries
        and raw.count(b"[") + raw.count(b"{") <= max_depth
        and len(raw) - len(raw.translate(None, DIGITS)) <= max_digits
    )


def _scan(raw: bytes, max_depth: int) -> _Structure:
    data = np.frombuffer(raw, dtype=np.uint8)
    quotes = np.flatnonzero(data == QUOTE)
    if quotes.size and BACKSLASH in raw:
        # A quote is escaped when an odd run of backslashes ends right before it.
        run_starts, run_ends = _runs(data == BACKSLASH)
        after_run = np.minimum(np.searchsorted(run_ends, quotes), len(run_ends) - 1)
        escaped = (run_ends[after_run] == quotes) & ((run_ends[after_run] - run_starts[after_run]) % 2 == 1)
        quotes = quotes[~escaped]
    toggles = np.zeros(len(data), dtype=np.uint8)
    toggles[quotes] = 1
    # uint8 wraps at 256, an even number, so the parity of the count stays right.
    outside = (np.cumsum(toggles, dtype=np.uint8) & 1) == 0
    del toggles
    outside[quotes] = False
    structural_mask = (data == ord("[")) | (data == ord("{")) | (data == ord("]")) | (data == ord("}"))
    structural_mask |= data == COMMA
    structural_mask &= outside
    structural = np.flatnonzero(structural_mask).astype(np.int32)
    del structural_mask
    chars = data[structural]
    is_open = (chars == ord("[")) | (chars == ord("{"))
    is_close = (chars == ord("]")) | (chars == ord("}"))
    depth = np.cumsum(is_open.view(np.int8) - is_close.view(np.int8), dtype=np.int32)  # after each one
    # Containers deeper than one past the limit never matter: the first too deep one is refused.
    shallow = depth <= max_depth + 1
    opens = structural[is_open & shallow]
    levels = depth[is_open & shallow]
    commas = (chars == COMMA) & shallow
    scale = np.int64(len(data) + 1)  # (level, position) -> level * scale + position: by level, then position
    order = np.argsort(levels * scale + opens, kind="stable")
    open_keys = (levels * scale + opens)[order]
    comma_keys = np.sort(depth[commas] * scale + structural[commas])
    # A comma belongs to the last container opened at its level before it.
    owners = np.searchsorted(open_keys, comma_keys, side="right") - 1
    entries = np.bincount(order[owners[owners >= 0]], minlength=len(opens)) + 1  # no comma: 0 or 1 entries
    return _Structure(data, outside, quotes, structural, depth, opens, open_keys, comma_keys, levels, entries)


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Starts and (exclusive) ends of the runs of True in `mask`."""
    edges = np.diff(mask.view(np.int8), prepend=np.int8(0), append=np.int8(0))
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


def _path(structure: _Structure, position: int) -> str:
    """The field holding the value that starts at `position`, e.g. `items[3].messages`."""
    before = int(np.searchsorted(structure.structural, position))
    open_around = int(structure.depth[before - 1]) if before > 0 else 0
    # The container around `position` at each level is the last one opened at that level before it.
    containers = [_last_opener(structure, level, position) for level in range(1, open_around + 1)]
    parts: list[str | int] = []
    for level, container in enumerate(containers, start=1):
        child = containers[level] if level < len(containers) else position
        if structure.data[container] == OPEN_ARRAY:
            low, high = np.searchsorted(structure.comma_keys, structure.key(level, np.array([container, child])))
            parts.append(int(high - low))
        else:
            parts.append(_key_before(structure, child))
    path = ""
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else part)
    return path or "body"


def _last_opener(structure: _Structure, level: int, position: int) -> int:
    index = int(np.searchsorted(structure.open_keys, structure.key(level, position))) - 1
    return int(structure.open_keys[index] - structure.key(level, 0))


def _key_before(structure: _Structure, position: int) -> str:
    """An object member's name: the last string before its value."""
    index = int(np.searchsorted(structure.quotes, position))
    if index < 2:
        return "?"
    start, end = structure.quotes[index - 2], structure.quotes[index - 1]
    text = bytes(structure.data[start : end + 1])
    try:
        return str(json.loads(text))
    except ValueError:
        return text[1:-1].decode("utf-8", errors="replace")
