"""The batcher's queue: the same sub-batches a sort of the whole queue gives, at a cost that does not grow with it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from rmserve.engine.length_queue import LengthQueue


@dataclass(eq=False)
class Item:
    index: int  # its place in arrival order
    tokens: int
    waiting: bool = False
    expired: bool = False


def sorted_cut(
    lengths: Sequence[int], anchor: int, max_batch_tokens: int, max_padding_ratio: float, max_rows: int
) -> list[int]:
    """The batcher's cut before the length queue: sort the whole queue by length, grow around the anchor."""
    order = sorted(range(len(lengths)), key=lambda index: lengths[index])
    low = high = order.index(anchor)
    real_tokens = lengths[anchor]
    while high - low + 1 < max_rows:
        neighbours = [position for position in (low - 1, high + 1) if 0 <= position < len(order)]
        neighbours.sort(key=lambda position: abs(lengths[order[position]] - lengths[anchor]))
        for position in neighbours:
            new_low, new_high = min(low, position), max(high, position)
            padded = (new_high - new_low + 1) * lengths[order[new_high]]
            real = real_tokens + lengths[order[position]]
            if padded <= max_batch_tokens and padded <= real * max_padding_ratio:
                low, high, real_tokens = new_low, new_high, real
                break
        else:
            break
    return order[low : high + 1]


def not_expired(item: Item) -> bool:
    return not item.expired


budgets = st.integers(1, 2048)
ratios = st.floats(1.0, 3.0)


@settings(max_examples=300, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 40), min_size=1, max_size=80),
    expired=st.sets(st.integers(0, 79)),
    budget=budgets,
    ratio=ratios,
    max_rows=st.integers(1, 70),
)
def test_sub_batches_are_those_a_sort_of_the_whole_queue_gives(
    lengths: list[int], expired: set[int], budget: int, ratio: float, max_rows: int
) -> None:
    """Take until empty: each sub-batch equals the old cut of the live queue (expired items dropped first)."""
    items = [Item(index, length, expired=index in expired) for index, length in enumerate(lengths)]
    queue: LengthQueue[Item] = LengthQueue()
    for item in items:
        queue.push(item)
    live = [item for item in items if not item.expired]
    while live:
        expected = {live[index].index for index in sorted_cut([i.tokens for i in live], 0, budget, ratio, max_rows)}
        taken = queue.take(not_expired, budget, ratio, max_rows)
        assert {item.index for item in taken} == expected
        live = [item for item in live if item.index not in expected]
        assert len(queue) <= len(live) + len(expired)  # expired items leave as the walks meet them
    assert queue.take(not_expired, budget, ratio, max_rows) == [] and len(queue) == 0


@settings(max_examples=200, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 300), min_size=1, max_size=60),
    budget=budgets,
    ratio=ratios,
    max_rows=st.integers(1, 70),
)
def test_a_sub_batch_respects_budget_rows_and_padding(
    lengths: list[int], budget: int, ratio: float, max_rows: int
) -> None:
    queue: LengthQueue[Item] = LengthQueue()
    for index, length in enumerate(lengths):
        queue.push(Item(index, length))
    taken = queue.take(not_expired, budget, ratio, max_rows)
    assert taken[0].index == 0  # the oldest item anchors it
    assert len(taken) <= max_rows and len(queue) == len(lengths) - len(taken)
    if len(taken) > 1:
        padded = max(item.tokens for item in taken) * len(taken)
        assert padded <= budget
        assert padded <= ratio * sum(item.tokens for item in taken) + 1e-9


def test_a_discarded_item_is_never_taken() -> None:
    queue: LengthQueue[Item] = LengthQueue()
    first, cancelled, last = Item(0, 4), Item(1, 4), Item(2, 4)
    for item in (first, cancelled, last):
        queue.push(item)
    queue.discard(cancelled)
    assert len(queue) == 2
    assert queue.take(not_expired, 100, 1.0, 10) == [first, last]
