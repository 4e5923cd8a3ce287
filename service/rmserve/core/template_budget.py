"""What one render of a chat template may spend: time, and bytes of the values it makes.

Templates come from checkpoints people download. Jinja's sandbox keeps them out of Python's
internals, not from looping for hours, building a 300 MB string or recursing when a response holds
some word. Every render runs with a `Budget`: until a deadline (the request's, at most MAX_RENDER_S
away) and within a number of bytes, in proportion to the conversation it lays out, that all the
values it makes may add up to. `rmserve.core.template_sandbox` charges it wherever a template spends
time or makes something; `rmserve.core.template_sizes` says how large a result may get before it
is made.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from jinja2.runtime import Undefined
from jinja2.utils import Namespace

from rmserve.errors import DeadlineExceeded

MAX_RENDER_S = 2.0  # a render of the longest conversation allowed takes milliseconds
BUDGET_FLOOR_BYTES = 1 << 20
# Llama's, Qwen's, Gemma's and Mistral's templates make 3-6 bytes per character they lay out
# (tests/core/test_chat_template.py measures it).
BUDGET_PER_INPUT_CHAR = 16

_budget: ContextVar[Budget | None] = ContextVar("template_budget", default=None)


class BudgetExceeded(Exception):
    """A render overran its time or size budget."""


@dataclass
class Budget:
    """What one render may still spend: until `deadline` (monotonic s), and `bytes_left` of values it makes."""

    deadline: float
    bytes_left: int
    requests_deadline: bool  # the deadline is the request's own: passing it is the request's 504

    @classmethod
    def for_render(cls, input_chars: int, request_deadline: float | None) -> Budget:
        capped = time.monotonic() + MAX_RENDER_S
        deadline = capped if request_deadline is None else min(capped, request_deadline)
        return cls(deadline, BUDGET_FLOOR_BYTES + BUDGET_PER_INPUT_CHAR * input_chars, deadline != capped)

    @contextmanager
    def active(self) -> Iterator[Budget]:
        """Make this the budget the template sandbox charges (in this thread or task)."""
        token = _budget.set(self)
        try:
            yield self
        finally:
            _budget.reset(token)

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            if self.requests_deadline:
                raise DeadlineExceeded("the request's deadline passed while its chat template was rendering")
            raise BudgetExceeded(f"it ran longer than {MAX_RENDER_S:g} s")

    def afford(self, size: int) -> None:
        """Refuse, before it is made, a value of `size` bytes that would overrun the budget."""
        self.tick()
        if size > self.bytes_left:
            raise BudgetExceeded(f"it would make a value of about {size} bytes ({max(self.bytes_left, 0)} left)")

    def spend(self, size: int) -> None:
        self.afford(size)
        self.bytes_left -= size


def current() -> Budget:
    """The budget of the render under way. Outside one (Jinja folding constants at compile time) nothing that
    charges may run: the fold fails and the expression runs at render time."""
    budget = _budget.get()
    if budget is None:
        raise BudgetExceeded("bounded operations run only while a template renders")
    return budget


def allocated(value: object) -> int:
    """Bytes of a value just made (a container's own, not its items': those were charged as they were made)."""
    return sys.getsizeof(value, 64)


def text_size(value: object, limit: int) -> int:
    """About len(str(value)), found without making the text: containers are walked, until past `limit`."""
    if isinstance(value, str):
        return len(value)
    size, pending = 0, [value]
    while pending and size <= limit:
        item = pending.pop()
        if isinstance(item, str):
            size += len(item) + 4  # quotes and a separator inside a container
        elif isinstance(item, int):
            size += item.bit_length() // 3 + 2
        elif isinstance(item, Undefined):
            continue  # prints as nothing
        elif isinstance(item, Mapping):
            size += 2 + 4 * len(item)
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, Collection):  # lists, tuples, sets, dict views
            size += 2 + 2 * len(item)
            pending.extend(item)
        elif isinstance(item, Namespace):
            pending.append(vars(item))  # its repr holds its attributes
        else:
            size += 64  # floats, loop contexts, macros, cyclers: short reprs
    return size
