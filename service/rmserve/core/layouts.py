"""Chat layouts trainers send text in, parsed into turns (and rendered back, which tests round-trip).

OpenRLHF's `query` and veRL's `/classify` input arrive laid out in the *policy's* chat format.
These layouts are recognised: ChatML (`<|im_start|>`), Llama 3 headers, Gemma turns, Mistral
`[INST]` and HH transcripts. The served model then renders the turns in its own input format.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rmserve.core.conversation import ROLES, Turn
from rmserve.core.transcript import Transcript
from rmserve.errors import InvalidField

# Tokens a decoded text carries around its turns: begin/end of text, end of turn, padding.
FILLER_TOKENS = (
    "<s>",
    "</s>",
    "<bos>",
    "<eos>",
    "<pad>",
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|endoftext|>",
    "<|im_end|>",
    "<|eot_id|>",
    "<end_of_turn>",
    "<|end|>",
)
# Every pattern here runs on client text of up to RMSERVE_MAX_TEXT_CHARS, so each one matches in time linear in
# it: no search for a repeated group that can fail at its end (`(?:...)+\Z` retries from every position of a run
# of whitespace, quadratic), possessive repeats where nothing follows, literal markers found with str.find.
_LEADING_FILLER = re.compile(r"(?:" + "|".join(map(re.escape, FILLER_TOKENS)) + r"|\s)*+")
# Trailing filler is leading filler of the reversed text, with the tokens spelled backwards.
_TRAILING_FILLER_REVERSED = re.compile(r"(?:" + "|".join(re.escape(token[::-1]) for token in FILLER_TOKENS) + r"|\s)*+")
_END_TOKEN = re.compile("|".join(map(re.escape, FILLER_TOKENS)))  # literals: linear from a position


def _filler_end(text: str, start: int, end: int) -> int:
    """Where the special tokens and whitespace from `start` (up to `end`) end."""
    filler = _LEADING_FILLER.match(text, start, end)
    return filler.end() if filler else start


class LayoutError(ValueError):
    """A text that looks like a layout but does not parse as one."""


@dataclass(frozen=True)
class Layout:
    """One chat layout: the markers that identify it, how to parse it and how to render it."""

    name: str
    marker: re.Pattern[str]  # where a turn starts
    parse: Callable[[str], list[Turn]]
    render: Callable[[Sequence[Turn]], str]

    def first_marker(self, text: str) -> int:
        """Where this layout's first turn marker is in `text` (-1: none)."""
        found = self.marker.search(text)
        return -1 if found is None else found.start()


def _turns_by_pattern(pattern: re.Pattern[str], roles: dict[str, str]) -> Callable[[str], list[Turn]]:
    """A parser for layouts whose every turn is `<open>role<sep>content<close>`."""

    def parse(text: str) -> list[Turn]:
        turns, position = [], 0
        for match in pattern.finditer(text):
            _check_filler(text, position, match.start())
            role = match.group("role")
            if role not in roles:
                raise LayoutError(f"unknown role {role!r} (known: {', '.join(roles)})")
            turns.append(Turn(roles[role], match.group("content")))
            position = match.end()
        _check_filler(text, position, len(text))
        return turns

    return parse


def _check_filler(text: str, start: int, end: int) -> None:
    """Text outside turns may only be special tokens and whitespace; anything else is not this layout."""
    filler_end = _filler_end(text, start, end)
    if filler_end < end:
        raise LayoutError(f"text outside any turn: {text[filler_end : min(end, filler_end + 40)]!r}")


def _closed(open_token: str, separator: str, close_token: str) -> re.Pattern[str]:
    """role and content; a turn ends at its close token, the next turn, or the end (an unfinished response)."""
    open_, close = re.escape(open_token), re.escape(close_token)
    return re.compile(
        rf"{open_}(?P<role>\w+){re.escape(separator)}(?P<content>.*?)(?:{close}|(?={open_})|\Z)", re.DOTALL
    )


def _check_roles(turns: Sequence[Turn], allowed: Sequence[str]) -> None:
    for turn in turns:
        if turn.role not in allowed:
            raise LayoutError(f"this layout has no {turn.role!r} role")


def _render_chatml(turns: Sequence[Turn]) -> str:
    return "".join(f"<|im_start|>{turn.role}\n{turn.content}<|im_end|>\n" for turn in turns)


def _render_llama3(turns: Sequence[Turn]) -> str:
    body = "".join(f"<|start_header_id|>{turn.role}<|end_header_id|>\n\n{turn.content}<|eot_id|>" for turn in turns)
    return "<|begin_of_text|>" + body


GEMMA_ROLES = {"user": "user", "model": "assistant"}


def _render_gemma(turns: Sequence[Turn]) -> str:
    _check_roles(turns, ("user", "assistant"))
    names = {role: name for name, role in GEMMA_ROLES.items()}
    return "<bos>" + "".join(f"<start_of_turn>{names[turn.role]}\n{turn.content}<end_of_turn>\n" for turn in turns)


class _Next:
    """Where `needle` next occurs at or after a position that only grows, so each part of the text is searched once
    (a lazy `[INST](.*?)[/INST]` pattern rescans the rest of the text from every `[INST]` without a `[/INST]`)."""

    def __init__(self, text: str, needle: str):
        self.text, self.needle = text, needle
        self.found: int | None = None  # the occurrence found last; -1: none after the position searched from

    def at(self, position: int) -> int:
        if self.found is None or 0 <= self.found < position:
            self.found = self.text.find(self.needle, position)
        return self.found


def _parse_mistral(text: str) -> list[Turn]:
    """`<s>[SYSTEM_PROMPT]s[/SYSTEM_PROMPT][INST] u [/INST] a</s>[INST] u2 [/INST]`: a reply may be open."""
    turns, position = [], 0
    system_start = text.find("[SYSTEM_PROMPT]")
    system_end = text.find("[/SYSTEM_PROMPT]", system_start) if system_start >= 0 else -1
    if system_end >= 0:
        _check_filler(text, 0, system_start)
        turns.append(Turn("system", text[system_start + len("[SYSTEM_PROMPT]") : system_end]))
        position = system_end + len("[/SYSTEM_PROMPT]")
    opening, closing, end_of_reply = _Next(text, "[INST]"), _Next(text, "[/INST]"), _Next(text, "</s>")
    while (start := opening.at(position)) >= 0 and (user_end := closing.at(start + len("[INST]"))) >= 0:
        _check_filler(text, position, start)
        # The spaces around `[INST] u [/INST] a` are the layout's own (as _render_mistral writes them).
        turns.append(Turn("user", text[start + len("[INST]") : user_end].removeprefix(" ").removesuffix(" ")))
        reply_start = user_end + len("[/INST]")
        ends = [found for found in (end_of_reply.at(reply_start), opening.at(reply_start)) if found >= 0]
        reply_end = min(ends, default=len(text))  # at `</s>`, the next `[INST]` or the end: a reply may be open
        closed = reply_end == end_of_reply.at(reply_start)
        reply = text[reply_start:reply_end].removeprefix(" ")
        if reply.strip() or closed:
            turns.append(Turn("assistant", reply))
        position = reply_end + len("</s>") if closed else reply_end
    _check_filler(text, position, len(text))
    return turns


def _render_mistral(turns: Sequence[Turn]) -> str:
    parts = ["<s>"]
    for turn in turns:
        if turn.role == "system":
            parts.append(f"[SYSTEM_PROMPT]{turn.content}[/SYSTEM_PROMPT]")
        elif turn.role == "user":
            parts.append(f"[INST] {turn.content} [/INST]")
        else:
            parts.append(f" {turn.content}</s>")
    return "".join(parts)


def transcript_layout(transcript: Transcript) -> Layout:
    """HH-RLHF transcripts with `transcript`'s role names."""
    names = "|".join(re.escape(name) for name in transcript.roles.values())

    def render(turns: Sequence[Turn]) -> str:
        return transcript.render_turns([{"role": turn.role, "content": turn.content} for turn in turns])

    return Layout("HH transcript", re.compile(rf"(?:^|\n\n)(?:{names}):"), transcript.parse, render)


CHATML = Layout(
    "ChatML",
    re.compile(re.escape("<|im_start|>")),
    _turns_by_pattern(_closed("<|im_start|>", "\n", "<|im_end|>"), {role: role for role in ROLES}),
    _render_chatml,
)
LLAMA3 = Layout(
    "Llama 3",
    re.compile(re.escape("<|start_header_id|>")),
    _turns_by_pattern(_closed("<|start_header_id|>", "<|end_header_id|>\n\n", "<|eot_id|>"), {r: r for r in ROLES}),
    _render_llama3,
)
GEMMA = Layout(
    "Gemma",
    re.compile(re.escape("<start_of_turn>")),
    _turns_by_pattern(_closed("<start_of_turn>", "\n", "<end_of_turn>"), GEMMA_ROLES),
    _render_gemma,
)
MISTRAL = Layout("Mistral", re.compile(r"\[INST\]|\[SYSTEM_PROMPT\]"), _parse_mistral, _render_mistral)
HH = transcript_layout(Transcript())
LAYOUTS = (CHATML, LLAMA3, GEMMA, MISTRAL, HH)
KNOWN = ", ".join(layout.name for layout in LAYOUTS)

# A response holding any of these starts a turn of its own: a policy steering where the split falls.
# A role name after a line break and whitespace: `\n[^\S\n]*` finds what `\n\s*` would (from the run's last line
# break) without rescanning a run of line breaks from each of them.
_TURN_MARKER = re.compile(
    r"<\|im_start\|>|<\|start_header_id\|>|<start_of_turn>|\[INST\]|(?:^|\n)[^\S\n]*(?:Human|Assistant):"
)


def detect(text: str, layouts: Sequence[Layout] = LAYOUTS) -> Layout | None:
    """The layout whose marker comes first in `text`, if any."""
    found = [(index, layout) for layout in layouts if (index := layout.first_marker(text)) >= 0]
    return min(found, key=lambda hit: hit[0])[1] if found else None


def parse_text(text: str, field: str, layouts: Sequence[Layout] = LAYOUTS) -> list[Turn]:
    """All turns of a formatted text, or InvalidField naming `field` and the layouts known."""
    layout = detect(text, layouts)
    if layout is None:
        raise InvalidField(field, f"cannot find chat turns: the text is in no known layout; known: {KNOWN}")
    try:
        turns = layout.parse(text)
    except LayoutError as error:
        raise InvalidField(field, f"looks like {layout.name} but does not parse: {error}; known: {KNOWN}") from None
    if not turns:
        raise InvalidField(field, f"no turns found in the {layout.name} text")
    return turns


def split_text(text: str, field: str, layouts: Sequence[Layout] = LAYOUTS) -> tuple[tuple[Turn, ...], str]:
    """A full formatted text -> (turns before the last assistant turn, that turn's content)."""
    turns = parse_text(text, field, layouts)
    if turns[-1].role != "assistant":
        raise InvalidField(field, f"the text ends with a {turns[-1].role} turn; the last turn must be the response")
    return tuple(turns[:-1]), turns[-1].content


def opens_with_turn(text: str, layouts: Sequence[Layout] = LAYOUTS) -> bool:
    """Whether `text` is formatted: it starts with a turn marker (after special tokens and whitespace)."""
    opening = text[_filler_end(text, 0, len(text)) :]
    return any(layout.marker.match(opening) for layout in layouts)


def prompt_turns(prompt: str, field: str, layouts: Sequence[Layout] = LAYOUTS) -> tuple[Turn, ...]:
    """A prompt as turns: a formatted prompt is parsed, its open assistant header dropped; any other text is one
    user turn, whatever it mentions."""
    if not opens_with_turn(prompt, layouts):
        return (Turn("user", prompt),)
    turns = parse_text(prompt, field, layouts)
    if turns[-1].role == "assistant" and not turns[-1].content.strip():
        turns = turns[:-1]
    return tuple(turns)


def strip_end_tokens(response: str) -> str:
    """A decoded response without the end-of-turn, end-of-text and padding tokens after it; its own text, spaces
    included, stays as written."""
    reversed_filler = _TRAILING_FILLER_REVERSED.match(response[::-1])
    filler_start = len(response) - (reversed_filler.end() if reversed_filler else 0)
    end_token = _END_TOKEN.search(response, filler_start)  # whitespace before it is the response's own
    return response if end_token is None else response[: end_token.start()]


def has_turn_markers(response: str) -> bool:
    """Whether a response writes a turn of its own (fake `Human:`, `<|im_start|>user`, ...)."""
    return _TURN_MARKER.search(response) is not None
