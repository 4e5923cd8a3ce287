"""A model's Jinja chat template, rendered the way transformers' `apply_chat_template` renders it.

Templates come from checkpoints people download, so they run in Jinja's immutable sandbox, with
the environment transformers sets up: `trim_blocks`, `lstrip_blocks`, loop controls, a `tojson`
that does not escape HTML, `raise_exception`, `strftime_now`, and `{% generation %}` blocks
(rendered as their body). The tokenizer's special tokens (`bos_token`, `eos_token`, ...) are
template variables, as in transformers. Each render runs with a time and size budget
(`rmserve.core.template_budget`), stopped at the latest at the deadline `render_deadline` sets;
whatever goes wrong inside a template is a TemplateError.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension, loopcontrols
from jinja2.parser import Parser

from rmserve.core.template_budget import Budget, BudgetExceeded
from rmserve.core.template_sandbox import BoundedEnvironment
from rmserve.errors import DeadlineExceeded

MAX_ERROR_CHARS = 300  # of a template's own error message, in the 422 that quotes it

_deadline: ContextVar[float | None] = ContextVar("render_deadline", default=None)


class TemplateError(ValueError):
    """The template refused a conversation (`raise_exception`), failed while rendering it, overran its budget, or
    does not compile."""


@contextmanager
def render_deadline(deadline: float) -> Iterator[None]:
    """Chat templates rendered inside stop at `deadline` (monotonic s), raising DeadlineExceeded."""
    token = _deadline.set(deadline)
    try:
        yield
    finally:
        _deadline.reset(token)


class _GenerationBlock(Extension):
    """`{% generation %}...{% endgeneration %}` marks assistant text for training masks; here it is its body."""

    tags = {"generation"}  # noqa: RUF012 (jinja reads a class-level set)

    def parse(self, parser: Parser) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller: Any) -> str:
        return str(caller())


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(
    value: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None, sort_keys: bool = False
) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


class ChatTemplate:
    """A compiled template plus the special-token strings it may refer to."""

    def __init__(self, source: str, special_tokens: Mapping[str, str]):
        environment = BoundedEnvironment(
            {"tojson": _tojson}, trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationBlock, loopcontrols]
        )
        environment.globals["raise_exception"] = _raise_exception
        environment.globals["strftime_now"] = _strftime_now
        try:
            self.template = environment.compile_bounded(source)
        except Exception as error:  # a syntax error, or a source nested past the parser's recursion
            raise TemplateError(f"it does not compile: {_described(error)}") from None
        self.special_tokens = dict(special_tokens)

    def render(self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = False) -> str:
        """The conversation as the template lays it out, within a budget in proportion to it; DeadlineExceeded once
        the deadline `render_deadline` set passes, TemplateError for anything else that goes wrong."""
        conversation = [dict(message) for message in messages]
        laid_out = sum(len(text) for message in conversation for text in message.values())
        budget = Budget.for_render(laid_out + sum(map(len, self.special_tokens.values())), _deadline.get())
        try:
            with budget.active():
                return self.template.render(
                    messages=conversation,
                    tools=None,
                    documents=None,
                    add_generation_prompt=add_generation_prompt,
                    **self.special_tokens,
                )
        except DeadlineExceeded:
            raise
        except RecursionError:
            raise TemplateError("it recursed too deeply") from None
        except Exception as error:  # the template's own refusal, an overrun budget, or any error it ran into
            raise TemplateError(_described(error)) from None


def _described(error: Exception) -> str:
    if isinstance(error, jinja2.exceptions.TemplateError):
        text = str(error)
    elif isinstance(error, BudgetExceeded):
        text = f"it overran its rendering budget: {error}"
    else:
        text = f"{type(error).__name__}: {error}"
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS] + "..."
