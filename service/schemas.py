"""Request and response bodies. JSON becomes typed objects here, at the edge, or an error naming the field."""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Discriminator, Field, RootModel, Tag, TypeAdapter, ValidationError

from service.errors import EmptyInput, InvalidField


class Strict(BaseModel):
    """Unknown fields are refused: a misspelt `respones` must not be silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


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


class ItemsRequest(Strict):
    """Items form: any mix of prompt/response pairs and conversations."""

    model: str | None = None
    items: list[Item] = Field(min_length=1)


class GroupRequest(Strict):
    """Group form: one prompt, several responses."""

    model: str | None = None
    prompt: str
    responses: list[str] = Field(min_length=1)


def _request_form(value: Any) -> str:
    return "items_form" if isinstance(value, dict) and "items" in value else "group_form"


class ScoreRequest(
    RootModel[
        Annotated[
            Annotated[ItemsRequest, Tag("items_form")] | Annotated[GroupRequest, Tag("group_form")],
            Discriminator(_request_form),
        ]
    ]
):
    """`/v1/score` takes the items form or the group form."""


class RankRequest(GroupRequest):
    """One prompt and the group of responses to rank."""


class ScoreResponse(BaseModel):
    model: str
    version: int
    scores: list[float] = Field(description="(raw - mean) / std with the manifest's normalization")
    raw_scores: list[float]
    truncated: list[bool] = Field(description="whether the item was cut to the model's max_length")
    tokens: list[int] = Field(description="tokens the model read per item")
    request_id: str


class RankResponse(ScoreResponse):
    ranking: list[int] = Field(description="indices into responses, best first")
    z_scores: list[float] = Field(description="scores standardized within the group")
    pairwise: list[list[float]] = Field(description="pairwise[i][j] = P(i preferred over j) = sigmoid(r_i - r_j)")


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None


class ErrorBody(BaseModel):
    error: ErrorDetail


class ModelCard(BaseModel):
    name: str
    version: int
    sha256: str
    max_length: int
    normalization: dict[str, float]
    evaluation: dict[str, Any]
    quantization: str | None
    default: bool


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


Parsed = TypeVar("Parsed")


@cache
def _adapter(schema: Any) -> TypeAdapter[Any]:
    return TypeAdapter(schema)


def parse(schema: type[Parsed], payload: Any) -> Parsed:
    """Validate a decoded JSON body; the first problem becomes InvalidField naming its path."""
    try:
        return _adapter(schema).validate_python(payload)
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


# Union member tags pydantic puts in error locations; clients never wrote them.
FORM_TAGS = frozenset({"pair_form", "chat_form", "items_form", "group_form"})


def field_path(location: tuple[str | int, ...]) -> str:
    """('items_form', 'items', 3, 'pair_form', 'response') -> 'items[3].response'."""
    path = ""
    for part in location:
        if part in FORM_TAGS:
            continue
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path
