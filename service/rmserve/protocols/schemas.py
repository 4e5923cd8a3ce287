"""What every protocol's request bodies are built from, and `parse`: JSON becomes typed objects here,
at the edge, or an error naming the field the way the client wrote it (`items[3].response`)."""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Discriminator, Field, RootModel, Tag, TypeAdapter, ValidationError

from rmserve.errors import EmptyInput, InvalidField


class Strict(BaseModel):
    """Unknown fields are refused: a misspelt `respones` must not be silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Lenient(BaseModel):
    """Trainers add fields of their own (`labels`, `add_special_tokens`, `priority`): ignored, as their servers do."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class Message(Strict):
    role: Literal["system", "user", "assistant"]
    content: str


class PairItem(Strict):
    """A prompt and the response to score."""

    prompt: str
    response: str


class ChatItem(Strict):
    """A conversation whose last message is the assistant's response to score."""

    messages: list[Message] = Field(min_length=1)


def _item_form(value: Any) -> str:
    has_messages = isinstance(value, ChatItem) or (isinstance(value, dict) and "messages" in value)
    return "chat_form" if has_messages else "pair_form"


Item = Annotated[
    Annotated[PairItem, Tag("pair_form")] | Annotated[ChatItem, Tag("chat_form")], Discriminator(_item_form)
]


class ItemBody(RootModel[Item]):
    """One item on its own (a line of `rmserve score`'s input)."""


# Union member tags pydantic puts in error locations; clients never wrote them.
FORM_TAGS = frozenset({"pair_form", "chat_form", "items_form", "group_form"})

Parsed = TypeVar("Parsed")


@cache
def _adapter(schema: Any) -> TypeAdapter[Any]:
    return TypeAdapter(schema)


def parse(schema: type[Parsed], payload: Any) -> Parsed:
    """Validate a decoded JSON body; the first problem becomes InvalidField naming its path."""
    try:
        return _adapter(schema).validate_python(payload)  # type: ignore[arg-type, no-any-return]
    except ValidationError as error:
        # An unknown field (a typo) explains the missing one it was meant to be: report it first.
        problems = sorted(error.errors(include_url=False), key=lambda problem: problem["type"] != "extra_forbidden")
        problem = problems[0]
        location = field_path(problem["loc"])
        message = problem["msg"]
        if problem["type"] == "missing":
            message = "is required"
        elif problem["type"] == "extra_forbidden":
            message = "is not a known field"
        elif problem["type"] == "too_short":
            raise EmptyInput(f"{location} is empty: nothing to score", field=location) from None
        elif problem["type"] == "model_type":
            message = "must be a JSON object"
        raise InvalidField(location or "body", message) from None


def field_path(location: tuple[str | int, ...]) -> str:
    """('items_form', 'items', 3, 'pair_form', 'response') -> 'items[3].response'."""
    path = ""
    for part in location:
        if part in FORM_TAGS:
            continue
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path
