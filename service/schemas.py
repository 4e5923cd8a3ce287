"""Request and response bodies. JSON becomes typed objects here, at the edge, or an error naming the field."""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from service.errors import InvalidField


class Strict(BaseModel):
    """Unknown fields are refused: a misspelt `respones` must not be silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Message(Strict):
    role: Literal["system", "user", "assistant"]
    content: str


class Item(Strict):
    """One thing to score: a prompt and a response, or a conversation ending with the response."""

    prompt: str | None = None
    response: str | None = None
    messages: list[Message] | None = Field(None, description="a conversation whose last message is the assistant's")

    @model_validator(mode="after")
    def _one_form(self) -> Item:
        if self.messages is not None:
            if self.prompt is not None or self.response is not None:
                raise ValueError("give either messages, or prompt and response, not both")
        elif self.prompt is None or self.response is None:
            raise ValueError("needs prompt and response (strings), or messages")
        return self


class ScoreRequest(Strict):
    """Items form (`items`) or group form (`prompt` + `responses`)."""

    model: str | None = None
    items: list[Item] | None = None
    prompt: str | None = None
    responses: list[str] | None = None

    @model_validator(mode="after")
    def _one_form(self) -> ScoreRequest:
        if self.items is not None:
            if self.prompt is not None or self.responses is not None:
                raise ValueError("give either items, or prompt and responses, not both")
        elif self.prompt is None or self.responses is None:
            raise ValueError("needs items, or prompt and responses")
        return self


class RankRequest(Strict):
    model: str | None = None
    prompt: str
    responses: list[str]


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


Parsed = TypeVar("Parsed", bound=BaseModel)


def parse(schema: type[Parsed], payload: Any) -> Parsed:
    """Validate a decoded JSON body; the first problem becomes InvalidField naming its path."""
    try:
        return schema.model_validate(payload)
    except ValidationError as error:
        problem = error.errors(include_url=False)[0]
        location = field_path(problem["loc"])
        message = problem["msg"]
        if problem["type"] == "missing":
            message = "is required"
        elif problem["type"] == "extra_forbidden":
            message = "is not a known field"
        elif problem["type"] == "model_type":
            message = "must be a JSON object"
        elif problem["type"] == "value_error":
            message = str(problem["ctx"]["error"])
        raise InvalidField(location or "body", message) from None


def field_path(location: tuple[str | int, ...]) -> str:
    """('items', 3, 'response') -> 'items[3].response'."""
    path = ""
    for part in location:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path
