"""How a model reads an exchange: its manifest's `input_format` turns turns and a response into tokens.

- `transcript`: HH turns (rmserve's own models); prompt and response joined at the token level;
- `pair`: the tokenizer's own pair template (`[CLS] prompt [SEP] response [SEP]`, encoder RMs);
- `chat_template`: the model's Jinja template over the whole conversation (decoder RMs); the graph
  reads the score where the model does (the last token).

Training, import, eval and serving all lay out exchanges through `InputFormat.encode`: the data
reader (`rmserve.training.data`) and the protocols build the same `Exchange`s, so a model reads
the same tokens in both. Each format truncates to `max_length` in its own way, keeping the
response and the end of the conversation, and reports per item that it did.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import tokenizers
from tokenizers import Tokenizer

from rmserve.core.chat_template import ChatTemplate, TemplateError
from rmserve.core.conversation import Exchange, Turn
from rmserve.core.layouts import LAYOUTS, Layout, detect, prompt_turns, transcript_layout
from rmserve.core.text_window import TextWindow
from rmserve.core.tokenizer import Encoding, PairEncoder, SpecialTokens, fit_pair, plain
from rmserve.core.transcript import Transcript
from rmserve.errors import InvalidField

STYLES = ("transcript", "pair", "chat_template")
# Re-renders allowed while cutting a conversation to max_length (token merges at a cut can add one or two).
MAX_CUTS = 4


class InputFormat(ABC):
    """Exchanges -> token sequences no longer than `max_length`, each saying whether it was cut."""

    style: ClassVar[str]
    max_length: int
    layouts: tuple[Layout, ...] = LAYOUTS  # what formatted prompt texts may be laid out in

    @abstractmethod
    def encode(self, exchanges: Sequence[Exchange]) -> list[Encoding]: ...

    @abstractmethod
    def to_manifest(self) -> dict[str, Any]: ...

    def encode_texts(self, prompts: Sequence[str], responses: Sequence[str]) -> list[Encoding]:
        """Prompt texts and their responses, each prompt read as `/v1/score` reads one (plain, or in a known layout)."""
        exchanges = [
            Exchange(prompt_turns(prompt, "prompt", self.layouts), response, "prompt", prompt_text=prompt)
            for prompt, response in zip(prompts, responses, strict=True)
        ]
        return self.encode(exchanges)


class TranscriptPrompts:
    """The prompt text a transcript model reads for an exchange, ending with its assistant marker."""

    def __init__(self, transcript: Transcript):
        self.transcript = transcript
        self.layouts = (transcript_layout(transcript), *LAYOUTS)  # its own transcript first

    def text(self, turns: Sequence[Turn], prompt_text: str | None) -> str:
        """A prompt written as plain text or in this transcript is kept byte for byte (HH data's odd spacing
        included, which the trained models learned); one in another layout is rendered from its turns."""
        if prompt_text is not None and detect(prompt_text, self.layouts) in (None, self.layouts[0]):
            return self.transcript.prompt_text(prompt_text)
        return self.transcript.render_prompt(turns)


class TranscriptFormat(InputFormat):
    """`[bos] HH prompt [sep] response [eos]`, joined at the token level (rmserve.core.tokenizer)."""

    style = "transcript"

    def __init__(self, transcript: Transcript, encoder: PairEncoder):
        self.transcript = transcript
        self.prompts = TranscriptPrompts(transcript)
        self.encoder = encoder
        self.max_length = encoder.max_length
        self.layouts = self.prompts.layouts

    def encode(self, exchanges: Sequence[Exchange]) -> list[Encoding]:
        prompts = per_prompt(exchanges, lambda exchange: self.prompts.text(exchange.prompt, exchange.prompt_text))
        return self.encoder.encode(prompts, [exchange.response for exchange in exchanges])

    def to_manifest(self) -> dict[str, Any]:
        return self.transcript.to_manifest()


class PairFormat(InputFormat):
    """The tokenizer's pair template around (prompt, response); a multi-turn prompt is its HH transcript."""

    style = "pair"

    def __init__(self, tokenizer: Tokenizer, max_length: int):
        self.tokenizer = plain(tokenizer)
        self.max_length = max_length
        self.budget = max_length - tokenizer.num_special_tokens_to_add(is_pair=True)
        if self.budget < 2:
            raise ValueError(f"max_length {max_length} leaves no room for text")
        self.window = TextWindow(self.tokenizer, max_length)

    def encode(self, exchanges: Sequence[Exchange]) -> list[Encoding]:
        prompts = self.window.encode(per_prompt(exchanges, lambda exchange: pair_prompt(exchange.prompt)), "end")
        responses = self.window.encode([e.response for e in exchanges], "start")
        return [
            self._join(prompt.encoding, response.encoding) for prompt, response in zip(prompts, responses, strict=True)
        ]

    def _join(self, prompt: tokenizers.Encoding, response: tokenizers.Encoding) -> Encoding:
        full = (len(prompt.ids), len(response.ids))
        kept = fit_pair(*full, self.budget)
        prompt.truncate(kept[0], direction="left")  # the end of the prompt, right before the response
        response.truncate(kept[1], direction="right")
        pair = self.tokenizer.post_process(prompt, response, add_special_tokens=True)
        return Encoding(input_ids=list(pair.ids), truncated=kept != full, response_tokens=full[1])

    def to_manifest(self) -> dict[str, Any]:
        return {"style": self.style}


def per_prompt(exchanges: Sequence[Exchange], render: Callable[[Exchange], str]) -> list[str]:
    """Each exchange's prompt text, rendered once per prompt it shares with others: a group's responses share one
    text. Keyed by identity: hashing a prompt of thousands of turns per item would cost more than rendering it."""
    rendered: dict[tuple[int, int], str] = {}
    texts = []
    for exchange in exchanges:
        key = (id(exchange.prompt), id(exchange.prompt_text))
        if key not in rendered:
            rendered[key] = render(exchange)
        texts.append(rendered[key])
    return texts


def pair_prompt(turns: Sequence[Turn]) -> str:
    """One user turn is the prompt itself; a longer conversation is its HH transcript."""
    if len(turns) == 1 and turns[0].role == "user":
        return turns[0].content
    return Transcript().render_turns([{"role": turn.role, "content": turn.content} for turn in turns]).lstrip()


class ChatTemplateFormat(InputFormat):
    """The whole conversation, response included, through the model's chat template, tokenized as rendered."""

    style = "chat_template"

    def __init__(self, template: ChatTemplate, source: str, tokenizer: Tokenizer, max_length: int):
        self.template = template
        self.source = source
        self.tokenizer = plain(tokenizer)
        self.max_length = max_length
        self.window = TextWindow(self.tokenizer, max_length)

    def encode(self, exchanges: Sequence[Exchange]) -> list[Encoding]:
        return [self._fit(self._windowed(exchange)) for exchange in exchanges]

    def _windowed(self, exchange: Exchange) -> Exchange:
        """Each turn cut to the window that can reach the model (its end; the response's start) before rendering."""
        contents = self.window.encode([turn.content for turn in exchange.prompt], "end")
        (response,) = list(self.window.encode([exchange.response], "start"))
        turns = tuple(Turn(turn.role, window.text) for turn, window in zip(exchange.prompt, contents, strict=True))
        return dataclasses.replace(exchange, prompt=turns, response=response.text)

    def render(self, turns: Sequence[Turn], response: str, field: str) -> str:
        messages = [{"role": turn.role, "content": turn.content} for turn in (*turns, Turn("assistant", response))]
        try:
            return self.template.render(messages)
        except TemplateError as error:
            raise InvalidField(field, f"the model's chat template refuses this conversation: {error}") from None

    def _ids(self, turns: Sequence[Turn], response: str, field: str) -> list[int]:
        # As apply_chat_template(tokenize=True): the rendered text holds its own special tokens.
        return list(self.tokenizer.encode(self.render(turns, response, field), add_special_tokens=False).ids)

    def _fit(self, exchange: Exchange) -> Encoding:
        """Drop the oldest turns (a system message stays), then cut the last prompt turn's start and the response's
        end, re-rendering each time so the template's own tokens stay whole."""
        turns, response, field = list(exchange.prompt), exchange.response, exchange.field
        # The whole response's length on its own, as the length flags read it (rmserve.engine.flags).
        response_tokens = len(self.tokenizer.encode(response, add_special_tokens=False).ids)
        ids = self._ids(turns, response, field)
        if len(ids) <= self.max_length:
            return Encoding(ids, truncated=False, response_tokens=response_tokens)
        head = turns[:1] if turns and turns[0].role == "system" else []
        body = turns[len(head) :]
        while len(body) > 1 and len(ids) > self.max_length:
            body = body[1:]
            while len(body) > 1 and body[0].role != "user":  # templates insist on user/assistant alternation
                body = body[1:]
            ids = self._ids(head + body, response, field)
        for _ in range(MAX_CUTS):
            if len(ids) <= self.max_length:
                break
            body, response = self._cut(head, body, response, len(ids) - self.max_length)
            ids = self._ids(head + body, response, field)
        # Only a template longer than max_length on its own gets here: keep the end, where the score is read.
        return Encoding(ids[-self.max_length :], truncated=True, response_tokens=response_tokens)

    def _cut(self, head: list[Turn], body: list[Turn], response: str, excess: int) -> tuple[list[Turn], str]:
        """Shorten the last prompt turn (from its start) and the response (from its end) by `excess` tokens."""
        last = body[-1] if body else Turn("user", "")
        prompt_tokens = self.tokenizer.encode(last.content, add_special_tokens=False)
        response_tokens = self.tokenizer.encode(response, add_special_tokens=False)
        full = (len(prompt_tokens.ids), len(response_tokens.ids))
        prompt_kept, response_kept = fit_pair(*full, sum(full) - excess)
        if response_kept < full[1]:
            response = response[: response_tokens.offsets[response_kept][0]] if response_kept else ""
        if prompt_kept < full[0] and body:
            start = full[0] - prompt_kept
            content = last.content[prompt_tokens.offsets[start][0] :] if prompt_kept else ""
            body = [*body[:-1], Turn(last.role, content)]
        return body, response

    def to_manifest(self) -> dict[str, Any]:
        return {"style": self.style, "template": self.source, "special_tokens": dict(self.template.special_tokens)}


def load_format(
    spec: Mapping[str, Any], tokenizer: Tokenizer, max_length: int, special: SpecialTokens, prompt_cache_bytes: int = 0
) -> InputFormat:
    """The manifest's `input_format` over the version's tokenizer (`prompt_cache_bytes` for a transcript model's
    prompt cache, rmserve.core.prompt_cache); ValueError names what is wrong."""
    style = spec.get("style", "transcript")
    if style == "transcript":
        encoder = PairEncoder(tokenizer, max_length, special, prompt_cache_bytes)
        return TranscriptFormat(Transcript.from_manifest(spec), encoder)
    if style == "pair":
        return PairFormat(tokenizer, max_length)
    if style == "chat_template":
        source, special_tokens = spec.get("template"), spec.get("special_tokens", {})
        if not isinstance(source, str) or not source:
            raise ValueError("input_format.template must be the chat template's Jinja source")
        if not isinstance(special_tokens, Mapping):
            raise ValueError("input_format.special_tokens must map names (bos_token, ...) to token strings")
        template = ChatTemplate(source, {str(name): str(token) for name, token in special_tokens.items()})
        return ChatTemplateFormat(template, source, tokenizer, max_length)
    raise ValueError(f"unsupported input_format.style {style!r} (supported: {', '.join(STYLES)})")
