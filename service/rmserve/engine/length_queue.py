"""The batcher's queue: waiting items in arrival order and by length, so a sub-batch costs the same however many wait.

A sub-batch is the oldest waiting item (its anchor) plus the items nearest to it in length
(`cut_batch`). Sorting the whole queue for each sub-batch made a backlog of thousands of items
slow every sub-batch down; here the items wait in one arrival deque and one deque per length, and
a sub-batch walks outwards from the anchor's length through the lengths present, reading only the
items it takes (and any it drops on the way). An item taken or dropped through one structure stays
in the other until that one reaches it, then is forgotten: every item is pushed and popped once per
structure.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, Protocol, TypeVar


class Queued(Protocol):
    """What the queue needs of an item: its length, and whether it still waits (not taken, dropped or cancelled)."""

    waiting: bool

    @property
    def tokens(self) -> int: ...


Item = TypeVar("Item", bound=Queued)


def cut_batch(
    anchor: int,
    lower: Iterator[int],
    higher: Iterator[int],
    max_batch_tokens: int,
    max_padding_ratio: float,
    max_rows: int,
) -> int:
    """Grow a sub-batch around an item of `anchor` tokens, one nearest length at a time; return its row count.

    `lower` yields the candidates' lengths below the anchor's, `higher` those from it up, each nearest
    first; a side is advanced only past a length that joined. A candidate joins while the sub-batch has
    fewer than `max_rows` rows, and rows x width stays within `max_batch_tokens` and within
    `max_padding_ratio` x the real tokens; the nearer side is tried first (the lower one on a tie). The
    anchor alone is always a valid sub-batch.
    """
    sides = (lower, higher)
    nearest = [next(lower, None), next(higher, None)]
    rows, width, real = 1, anchor, anchor
    while rows < max_rows:
        candidates = sorted(
            ((abs(length - anchor), side, length) for side, length in enumerate(nearest) if length is not None),
            key=lambda candidate: candidate[0],  # stable: the lower side first on a tie
        )
        for _, side, length in candidates:
            padded = (rows + 1) * max(width, length)
            if padded <= max_batch_tokens and padded <= (real + length) * max_padding_ratio:
                rows, width, real = rows + 1, max(width, length), real + length
                nearest[side] = next(sides[side], None)
                break
        else:
            break
    return rows


class LengthQueue(Generic[Item]):
    """Waiting items, oldest first and by length; not thread-safe (the batcher holds its lock)."""

    def __init__(self) -> None:
        self._arrivals: deque[Item] = deque()
        self._by_length: dict[int, deque[Item]] = {}  # each oldest first
        self._lengths: list[int] = []  # the keys of _by_length, sorted
        self._emptied: set[int] = set()  # lengths whose deque a take emptied, forgotten when it ends
        self._waiting = 0

    def __len__(self) -> int:
        """How many items wait."""
        return self._waiting

    def push(self, item: Item) -> None:
        item.waiting = True
        self._arrivals.append(item)
        bucket = self._by_length.get(item.tokens)
        if bucket is None:
            bucket = self._by_length[item.tokens] = deque()
            bisect.insort(self._lengths, item.tokens)
        bucket.append(item)
        self._waiting += 1

    def discard(self, item: Item) -> None:
        """The item no longer waits (taken, dropped or cancelled); the deques forget it when they reach it."""
        if item.waiting:
            item.waiting = False
            self._waiting -= 1

    def take(
        self, keep: Callable[[Item], bool], max_batch_tokens: int, max_padding_ratio: float, max_rows: int
    ) -> list[Item]:
        """Remove and return the next sub-batch (`cut_batch` around the oldest item), or [] once none waits.

        Each waiting item the walk meets is offered to `keep` first: one it refuses (expired) is dropped.
        """
        anchor = self._anchor(keep)
        if anchor is None:
            return []
        taken = [anchor]
        position = bisect.bisect_left(self._lengths, anchor.tokens)
        lower = self._side(range(position - 1, -1, -1), taken, keep, nearest_last=True)
        higher = self._side(range(position, len(self._lengths)), taken, keep, nearest_last=False)
        cut_batch(anchor.tokens, lower, higher, max_batch_tokens, max_padding_ratio, max_rows)
        self._forget_emptied()
        return taken

    def _anchor(self, keep: Callable[[Item], bool]) -> Item | None:
        """The oldest waiting item that `keep` keeps, out of both deques."""
        while self._arrivals:
            item = self._arrivals[0]
            if item.waiting and keep(item):
                self._arrivals.popleft()
                bucket = self._by_length[item.tokens]
                while bucket[0] is not item:  # older items of its length: all taken or dropped already
                    bucket.popleft()
                bucket.popleft()
                self._note_if_empty(item.tokens)
                self.discard(item)
                return item
            self._arrivals.popleft()
            self.discard(item)
        return None

    def _side(
        self, positions: Iterable[int], taken: list[Item], keep: Callable[[Item], bool], nearest_last: bool
    ) -> Iterator[int]:
        """The lengths of the waiting items at `positions` of the sorted lengths, nearest to the anchor first.

        Below the anchor's length the nearest item of a length is its youngest (`nearest_last`), from it up its
        oldest, as in one stable sort of the queue by length. Resuming after a yield takes the item yielded.
        """
        for position in positions:
            length = self._lengths[position]
            bucket = self._by_length[length]
            while bucket:
                item = bucket[-1] if nearest_last else bucket[0]
                if item.waiting and keep(item):
                    yield length
                    taken.append(item)
                self.discard(item)
                if nearest_last:
                    bucket.pop()
                else:
                    bucket.popleft()
            self._note_if_empty(length)

    def _note_if_empty(self, length: int) -> None:
        if not self._by_length[length]:
            self._emptied.add(length)

    def _forget_emptied(self) -> None:
        """Drop the lengths a take emptied (after it: its walk indexed the sorted lengths)."""
        if not self._waiting:  # what is left are items taken or dropped through the other deque
            self._arrivals.clear()
            self._by_length.clear()
            self._lengths.clear()
        for length in self._emptied:
            if not self._by_length.get(length, True):
                del self._by_length[length]
                self._lengths.pop(bisect.bisect_left(self._lengths, length))
        self._emptied.clear()
