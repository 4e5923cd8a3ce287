"""What every protocol turns its request into: the conversation before a response, and the response.

Protocols build `Exchange`s from whatever the caller sent (a prompt string, messages, a full
formatted text); the model's input format (`rmserve.core.formats`) lays them out as tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Turn:
    role: str  # one of ROLES
    content: str


@dataclass(frozen=True)
class Exchange:
    """One item to score: the turns before the response, the response, and where it came from."""

    prompt: tuple[Turn, ...]
    response: str
    field: str  # how the client named the item (`items[2]`, `query[0]`, `input`), for errors
    injected_turn: bool = False  # the response itself holds turn markers (scored whole, never split)
    prompt_text: str | None = None  # the prompt as the client wrote it, when it came as text
    no_prompt: bool = False  # a plain text sent alone (/classify, /v2): a response with no prompt
