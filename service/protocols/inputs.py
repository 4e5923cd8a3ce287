"""Request bodies -> (prompt, response) text pairs in the model's input format, within limits.

Every endpoint (native and compatibility) builds its pairs here, so the limits and the
field names in errors are the same everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rmserve.config import Settings
from rmserve.core.formats import InputFormat
from rmserve.errors import EmptyInput, InvalidField, PayloadTooLarge
from rmserve.protocols.schemas import ChatItem, PairItem


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


def check_text(text: str, field: str, settings: Settings, limit: int | None = None) -> str:
    limit = limit or settings.max_text_chars
    if len(text) > limit:
        raise InvalidField(field, f"is {len(text)} characters; the limit is {limit}")
    return text


def group_pairs(prompt: str, responses: Sequence[str], input_format: InputFormat, settings: Settings) -> Pairs:
    """One prompt, several responses (the group form of /v1/score, and /v1/rank)."""
    check_count(len(responses), "responses", settings)
    prompt_text = input_format.prompt_text(check_text(prompt, "prompt", settings))
    texts = [check_text(response, f"responses[{index}]", settings).strip() for index, response in enumerate(responses)]
    return Pairs([prompt_text] * len(texts), texts)


def item_pairs(items: Sequence[PairItem | ChatItem], input_format: InputFormat, settings: Settings) -> Pairs:
    """The items form of /v1/score: prompt+response items and conversations, mixed freely."""
    check_count(len(items), "items", settings)
    prompts, responses = [], []
    for index, item in enumerate(items):
        field = f"items[{index}]"
        if isinstance(item, ChatItem):
            for turn, message in enumerate(item.messages):
                check_text(message.content, f"{field}.messages[{turn}].content", settings)
            messages = [message.model_dump() for message in item.messages]
            prompt, response = input_format.split_messages(messages, f"{field}.messages")
        else:
            prompt = input_format.prompt_text(check_text(item.prompt, f"{field}.prompt", settings))
            response = check_text(item.response, f"{field}.response", settings).strip()
        prompts.append(prompt)
        responses.append(response)
    return Pairs(prompts, responses)


def transcript_pairs(
    texts: Sequence[str], field: str, input_format: InputFormat, settings: Settings, indexed: bool = True
) -> Pairs:
    """Full transcripts (prompt and response in one text), split at their last assistant marker.

    `field` names the list (`query`, `input`); with `indexed`, errors name the entry (`query[2]`).
    """
    check_count(len(texts), field, settings)
    prompts, responses = [], []
    for index, text in enumerate(texts):
        text_field = f"{field}[{index}]" if indexed else field
        check_text(text, text_field, settings, limit=2 * settings.max_text_chars)  # before the split costs anything
        prompt, response = input_format.split_transcript(text, text_field)
        prompts.append(check_text(prompt, text_field, settings))
        responses.append(check_text(response, text_field, settings))
    return Pairs(prompts, responses)


def prefixed_pairs(
    texts: Sequence[str], prompts: Sequence[str], field: str, input_format: InputFormat, settings: Settings
) -> Pairs:
    """Full texts that start with their given prompt: the response is the rest of the text."""
    check_count(len(texts), field, settings)
    if len(prompts) != len(texts):
        raise InvalidField("prompts", f"has {len(prompts)} entries for {len(texts)} in {field}; send one per entry")
    prompt_texts, responses = [], []
    for index, (text, prompt) in enumerate(zip(texts, prompts, strict=True)):
        if not text.startswith(prompt):
            raise InvalidField(f"{field}[{index}]", f"does not start with prompts[{index}], so the response is unknown")
        prompt_texts.append(input_format.prompt_text(check_text(prompt, f"prompts[{index}]", settings)))
        responses.append(check_text(text[len(prompt) :], f"{field}[{index}]", settings).strip())
    return Pairs(prompt_texts, responses)
