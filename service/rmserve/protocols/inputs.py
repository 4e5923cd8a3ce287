"""Request bodies -> exchanges (the turns before a response, and the response), within limits.

Every endpoint (native and compatibility) builds its exchanges here, so the limits, the field
names in errors and the reading of formatted text are the same everywhere. Text laid out in a
known chat layout is parsed into turns (`rmserve.core.layouts`); the model's input format lays
them out its own way. Where the prompt is known, the response is everything after it, scored
whole even if it writes turns of its own (flagged `injected_turn`). A full text in no layout is a
response without a prompt (flagged `no_prompt`), as vLLM scores any text it is sent. Texts reach the
input format as sent: only the format decides what whitespace the model reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from rmserve.core.conversation import Exchange, Turn
from rmserve.core.formats import InputFormat
from rmserve.core.layouts import has_turn_markers, opens_with_turn, prompt_turns, split_text, strip_end_tokens
from rmserve.errors import EmptyInput, InvalidField, PayloadTooLarge
from rmserve.protocols.schemas import ChatItem, PairItem


class Limits(NamedTuple):
    """What one request may hold: RMSERVE_MAX_ITEMS items (None: any number, as a file `rmserve score` reads in
    chunks) and RMSERVE_MAX_TEXT_CHARS characters per text."""

    max_items: int | None
    max_text_chars: int


def check_count(count: int, field: str, limits: Limits) -> None:
    if count == 0:
        raise EmptyInput(f"{field} is empty: nothing to score", field=field)
    if limits.max_items is not None and count > limits.max_items:
        raise PayloadTooLarge(
            f"{count} items exceed the limit of {limits.max_items} per request (RMSERVE_MAX_ITEMS); split the request",
            field=field,
        )


def check_text(text: str, field: str, limits: Limits) -> str:
    if len(text) > limits.max_text_chars:
        raise InvalidField(field, f"is {len(text)} characters; the limit is {limits.max_text_chars}")
    return text


def answered(prompt: Sequence[Turn], response: str, field: str, prompt_text: str | None = None) -> Exchange:
    """A known prompt and its response, as sent: the response is scored whole, flagged if it writes turns."""
    return Exchange(tuple(prompt), response, field, has_turn_markers(response), prompt_text)


def group_exchanges(prompt: str, responses: Sequence[str], input_format: InputFormat, limits: Limits) -> list[Exchange]:
    """One prompt, several responses (the group form of /v1/score, and /v1/rank)."""
    check_count(len(responses), "responses", limits)
    turns = prompt_turns(check_text(prompt, "prompt", limits), "prompt", input_format.layouts)
    return [
        answered(turns, check_text(response, f"responses[{index}]", limits), f"responses[{index}]", prompt)
        for index, response in enumerate(responses)
    ]


def paired_exchanges(
    prompts: Sequence[str],
    responses: Sequence[str],
    fields: tuple[str, str],
    input_format: InputFormat,
    limits: Limits,
) -> list[Exchange]:
    """Parallel lists of prompts and responses (the Open Inference Protocol's `prompt` and `response` tensors)."""
    prompt_field, response_field = fields
    check_count(len(responses), response_field, limits)
    if len(prompts) != len(responses):
        raise InvalidField(prompt_field, f"has {len(prompts)} entries for {len(responses)} in {response_field}")
    return [
        answered(
            prompt_turns(
                check_text(prompt, f"{prompt_field}[{i}]", limits), f"{prompt_field}[{i}]", input_format.layouts
            ),
            check_text(response, f"{response_field}[{i}]", limits),
            f"{response_field}[{i}]",
            prompt,
        )
        for i, (prompt, response) in enumerate(zip(prompts, responses, strict=True))
    ]


def item_exchanges(items: Sequence[PairItem | ChatItem], input_format: InputFormat, limits: Limits) -> list[Exchange]:
    """The items form of /v1/score: prompt+response items and conversations, mixed freely."""
    check_count(len(items), "items", limits)
    exchanges = []
    for index, item in enumerate(items):
        field = f"items[{index}]"
        if isinstance(item, ChatItem):
            # A conversation is one item: all its messages together get what a prompt and a response may have.
            total = sum(len(message.content) for message in item.messages)
            if total > 2 * limits.max_text_chars:
                raise InvalidField(
                    f"{field}.messages",
                    f"holds {total} characters in all; a conversation may hold at most {2 * limits.max_text_chars} "
                    "(twice RMSERVE_MAX_TEXT_CHARS, as much as a prompt and a response)",
                )
            turns = [
                Turn(message.role, check_text(message.content, f"{field}.messages[{turn}].content", limits))
                for turn, message in enumerate(item.messages)
            ]
            if turns[-1].role != "assistant":
                raise InvalidField(
                    f"{field}.messages[{len(turns) - 1}].role",
                    "the last message must be the assistant's response to score",
                )
            exchanges.append(answered(turns[:-1], turns[-1].content, f"{field}.messages"))
        else:
            prompt = check_text(item.prompt, f"{field}.prompt", limits)
            turns = list(prompt_turns(prompt, f"{field}.prompt", input_format.layouts))
            response = check_text(item.response, f"{field}.response", limits)
            exchanges.append(answered(turns, response, field, prompt))
    return exchanges


def text_exchanges(
    texts: Sequence[str], field: str, input_format: InputFormat, limits: Limits, indexed: bool = True
) -> list[Exchange]:
    """Full texts: a formatted one (prompt and response in one) split at its last assistant turn, any other
    a response without a prompt.

    `field` names the list (`query`, `input`); with `indexed`, errors name the entry (`query[2]`).
    """
    check_count(len(texts), field, limits)
    exchanges = []
    for index, text in enumerate(texts):
        text_field = f"{field}[{index}]" if indexed else field
        check_text(text, text_field, limits)
        if not opens_with_turn(text, input_format.layouts):
            exchanges.append(Exchange((), text, text_field, has_turn_markers(text), no_prompt=True))
            continue
        turns, response = split_text(text, text_field, input_format.layouts)
        prompt_text = text[: text.rfind(response)] if response else text  # what comes before the response
        exchanges.append(Exchange(turns, response, text_field, prompt_text=prompt_text))
    return exchanges


def prefixed_exchanges(
    texts: Sequence[str], prompts: Sequence[str], field: str, input_format: InputFormat, limits: Limits
) -> list[Exchange]:
    """Full texts that start with their given prompt: the response is the rest (end-of-turn tokens dropped)."""
    check_count(len(texts), field, limits)
    if len(prompts) != len(texts):
        raise InvalidField("prompts", f"has {len(prompts)} entries for {len(texts)} in {field}; send one per entry")
    exchanges = []
    for index, (text, prompt) in enumerate(zip(texts, prompts, strict=True)):
        text_field = f"{field}[{index}]"
        if not text.startswith(prompt):
            raise InvalidField(text_field, f"does not start with prompts[{index}], so the response is unknown")
        turns = prompt_turns(check_text(prompt, f"prompts[{index}]", limits), f"prompts[{index}]", input_format.layouts)
        response = strip_end_tokens(check_text(text[len(prompt) :], text_field, limits))
        exchanges.append(answered(turns, response, text_field, prompt))
    return exchanges
