"""Jinja's immutable sandbox, charging the render's budget wherever a template spends time or makes a value.

Charged: each loop iteration (compiled loops iterate through a metering filter), each call, filter,
arithmetic operator (`* ** + %`), slice, `~` concatenation and piece of output. A call, filter or
operator whose result grows with an argument is refused before it runs if that result would overrun
the budget (`rmserve.core.template_sizes`); every other result is charged once made. What cannot
make anything larger than an operand (comparisons, tests, attribute reads) costs nothing.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from jinja2 import Template, nodes
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

from rmserve.core.template_budget import allocated, current, text_size
from rmserve.core.template_sizes import FILTER_SIZES, STR_METHOD_SIZES, operation_size

# Filters that turn their value into text: the text must fit the budget before it is made.
STRINGIFYING = frozenset(
    {
        "capitalize",
        "center",
        "e",
        "escape",
        "forceescape",
        "format",
        "indent",
        "join",
        "lower",
        "pprint",
        "replace",
        "reverse",
        "safe",
        "string",
        "striptags",
        "title",
        "tojson",
        "trim",
        "truncate",
        "upper",
        "urlencode",
        "urlize",
        "wordcount",
        "wordwrap",
        "xmlattr",
    }
)
_METERED, _EMITTED, _JOINED = "rmserve_metered", "rmserve_emitted", "rmserve_joined"


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox with `filters` added, every filter bounded; templates come from `compile_bounded`."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, filters: Mapping[str, Callable[..., Any]], **options: Any):
        super().__init__(**options)
        self.filters.update(filters)
        self.filters = {name: bounded_filter(name, function) for name, function in self.filters.items()}
        self.filters.update({_METERED: _metered, _EMITTED: _emitted, _JOINED: _joined})
        del self.globals["lipsum"]  # filler text of any length; no chat template writes it

    def compile_bounded(self, source: str) -> Template:
        """The template, with its loops, output and `~` metered (`_Metering`)."""
        tree = self.parse(source)
        _Metering().visit(tree)
        tree.set_environment(self)
        return self.from_string(tree)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        budget = current()
        if operator == "+" and isinstance(left, str) and isinstance(right, str):  # the templates' usual arithmetic
            budget.spend(len(left) + len(right))
            return left + right
        budget.afford(operation_size(operator, left, right, budget.bytes_left))
        result = super().call_binop(context, operator, left, right)
        budget.spend(allocated(result))
        return result

    def call(self, context: Context, function: Any, /, *args: Any, **kwargs: Any) -> Any:
        budget = current()
        method = getattr(function, "__wrapped__", function)  # the sandbox wraps str.format
        text = getattr(method, "__self__", None)
        if isinstance(text, str):
            name = getattr(method, "__name__", "")
            if name == "join" and args:  # materialized once, so its items can be measured before they are joined
                args = (list(args[0]), *args[1:])
            if name in STR_METHOD_SIZES:
                budget.afford(STR_METHOD_SIZES[name](text, args, kwargs, budget.bytes_left))
        result = super().call(context, function, *args, **kwargs)
        budget.spend(allocated(result))
        return result

    def getitem(self, obj: Any, argument: Any) -> Any:
        item = super().getitem(obj, argument)
        if isinstance(argument, slice):  # a copy
            current().spend(allocated(item))
        return item


def bounded_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """`function` charging the render for its result, refused before it runs if that result would overrun it."""
    value_at = 1 if hasattr(function, "jinja_pass_arg") else 0  # after the context or environment it is passed
    signature = inspect.signature(function) if name in FILTER_SIZES else None

    @functools.wraps(function)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        budget = current()
        if name == "join" and len(args) > value_at:  # materialized once, so its items can be measured
            args = (*args[:value_at], list(args[value_at]), *args[value_at + 1 :])
        if name in STRINGIFYING and len(args) > value_at:
            budget.afford(text_size(args[value_at], budget.bytes_left))
        if signature is not None:
            arguments = signature.bind(*args, **kwargs)
            arguments.apply_defaults()
            budget.afford(FILTER_SIZES[name](arguments.arguments, budget.bytes_left))
        result = function(*args, **kwargs)
        budget.spend(allocated(result))
        return result

    return bounded


def _metered(iterable: Iterable[Any]) -> Iterator[Any]:
    """A loop's items, each one a tick of the render's clock."""
    budget = current()
    for item in iterable:
        budget.tick()
        yield item


def _emitted(value: Any) -> Any:
    """A piece of output, charged as the text it becomes."""
    budget = current()
    budget.spend(text_size(value, budget.bytes_left))
    return value


def _joined(parts: list[Any]) -> str:
    """`a ~ b ~ c`, charged before it is made."""
    budget = current()
    budget.spend(sum(text_size(part, budget.bytes_left) for part in parts))
    return "".join(str(part) for part in parts)


class _Metering(NodeTransformer):
    """Send every loop's iterable, every piece of output and every `~` through the metering filters."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = _through(node.iter, _METERED)
        return node

    def visit_Output(self, node: nodes.Output) -> nodes.Node:
        self.generic_visit(node)
        node.nodes = [_through(child, _EMITTED) for child in node.nodes]
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return _through(nodes.List(node.nodes, lineno=node.lineno), _JOINED)


def _through(node: nodes.Node, name: str) -> nodes.Filter:
    return nodes.Filter(node, name, [], [], None, None, lineno=node.lineno)
