"""Request bodies -> (prompt, response) text pairs in the model's input format, within limits.

Every endpoint (native and compatibility) builds its pairs here, so the limits and the
field names in errors are the same everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from service.config import Settings
from service.errors import EmptyInput, InvalidField, PayloadTooLarge
from service.formatting import InputFormat
from service.schemas import Item, ScoreRequest


@dataclass(frozen=True)
class Pairs:
    prompts: list[str]
    responses: list[str]


def check_count(count: int, field: str, settings: Settings) -> None:
    if count == 0:
        raise EmptyInput(f"{field} is empty: nothing to score", field=field)
    if count > settings.max_items:
        raise PayloadTooLarge(
            f"{count} items exceed the limit of {settings.max_items} per request (RMSERVE_MAX_ITEMS); "
            "split the request",
            field=field,
        )


def check_text(text: str, field: str, settings: Settings) -> str:
    if len(text) > settings.max_text_chars:
        raise InvalidField(field, f"is {len(text)} characters; the limit is {settings.max_text_chars}")
    return text


def group_pairs(prompt: str, responses: Sequence[str], input_format: InputFormat, settings: Settings) -> Pairs:
    """One prompt, several responses (the group form of /v1/score, and /v1/rank)."""
    check_count(len(responses), "responses", settings)
    prompt_text = input_format.prompt_text(check_text(prompt, "prompt", settings))
    texts = [check_text(response, f"responses[{index}]", settings).strip() for index, response in enumerate(responses)]
    return Pairs([prompt_text] * len(texts), texts)


def item_pairs(items: Sequence[Item], input_format: InputFormat, settings: Settings) -> Pairs:
    """The items form of /v1/score: prompt+response items and conversations, mixed freely."""
    check_count(len(items), "items", settings)
    prompts, responses = [], []
    for index, item in enumerate(items):
        field = f"items[{index}]"
        if item.messages is not None:
            for turn, message in enumerate(item.messages):
                check_text(message.content, f"{field}.messages[{turn}].content", settings)
            messages = [message.model_dump() for message in item.messages]
            prompt, response = input_format.split_messages(messages, f"{field}.messages")
        else:
            assert item.prompt is not None and item.response is not None  # the schema guarantees one form
            prompt = input_format.prompt_text(check_text(item.prompt, f"{field}.prompt", settings))
            response = check_text(item.response, f"{field}.response", settings).strip()
        prompts.append(prompt)
        responses.append(response)
    return Pairs(prompts, responses)


def score_request_pairs(body: ScoreRequest, input_format: InputFormat, settings: Settings) -> Pairs:
    if body.items is not None:
        return item_pairs(body.items, input_format, settings)
    assert body.prompt is not None and body.responses is not None
    return group_pairs(body.prompt, body.responses, input_format, settings)
