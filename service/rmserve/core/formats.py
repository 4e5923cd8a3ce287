"""How a model reads an exchange: its manifest's `input_format` turns turns and a response into tokens.

Named after how the model was trained:
- `transcript`: HH turns (rmserve's own models); prompt and response joined at the token level; the
  one format that normalizes whitespace, as its training data did (responses and turns stripped);
- `pair`: the tokenizer's own pair template (`[CLS] prompt [SEP] response [SEP]`, cross-encoder RMs);
- `text`: prompt and response as one sequence with the tokenizer's special tokens and, when the
  trainer appended it, its EOS (TRL's RewardTrainer on plain data);
- `chat_template`: the model's Jinja template over the whole conversation (decoder RMs); the graph
  reads the score where the model does (the last token).
Every format but `transcript` reads text byte for byte: `text` keeps a prompt as it was sent; `pair`
keeps one written plain (or as an HH transcript) and renders one in another chat layout from its
turns; `chat_template` renders turns, their contents as sent.

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
from rmserve.core.layouts import HH, LAYOUTS, Layout, detect, prompt_turns, transcript_layout
from rmserve.core.text_window import TextWindow
from rmserve.core.tokenizer import Encoding, PairEncoder, SpecialTokens, fit_pair, plain
from rmserve.core.transcript import Transcript
from rmserve.core.truncation import fit_rendered, fit_tokens, token_count
from rmserve.errors import InvalidField

STYLES = ("transcript", "pair", "text", "chat_template")


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


class PromptTexts:
    """The prompt text a format reads: one written plain or in the format's own layout is kept as written (`keep`
    applies the format's normalization, if any); one in another chat layout is rendered from its turns."""

    def __init__(self, own: Layout, keep: Callable[[str], str], render: Callable[[Sequence[Turn]], str]):
        self.own, self.keep, self.render = own, keep, render
        self.layouts = (own, *(layout for layout in LAYOUTS if layout is not own))  # its own layout first

    @classmethod
    def transcript(cls, transcript: Transcript) -> PromptTexts:
        """HH data's odd spacing in a prompt is kept (the trained models learned it), closed by the assistant marker."""
        return cls(transcript_layout(transcript), transcript.prompt_text, transcript.render_prompt)

    def text(self, turns: Sequence[Turn], prompt_text: str | None) -> str:
        if prompt_text is not None and detect(prompt_text, self.layouts) in (None, self.own):
            return self.keep(prompt_text)
        return self.render(turns)


def transcript_response(response: str) -> str:
    """A response as rmserve's own models read it: stripped, as their training data had it (HH-RLHF's split)."""
    return response.strip()


class TranscriptFormat(InputFormat):
    """`[bos] HH prompt [sep] response [eos]`, joined at the token level (rmserve.core.tokenizer)."""

    style = "transcript"

    def __init__(self, transcript: Transcript, encoder: PairEncoder):
        self.transcript = transcript
        self.prompts = PromptTexts.transcript(transcript)
        self.encoder = encoder
        self.max_length = encoder.max_length
        self.layouts = self.prompts.layouts

    def encode(self, exchanges: Sequence[Exchange]) -> list[Encoding]:
        prompts = per_prompt(exchanges, lambda exchange: self.prompts.text(exchange.prompt, exchange.prompt_text))
        return self.encoder.encode(prompts, [transcript_response(exchange.response) for exchange in exchanges])

    def to_manifest(self) -> dict[str, Any]:
        return self.transcript.to_manifest()


def pair_prompt(turns: Sequence[Turn]) -> str:
    """One user turn is the prompt itself; a longer conversation is its HH transcript."""
    if len(turns) == 1 and turns[0].role == "user":
        return turns[0].content
    return Transcript().render_turns([{"role": turn.role, "content": turn.content} for turn in turns]).lstrip()


def _as_written(prompt: str) -> str:
    return prompt


# The prompt a pair model reads: as the caller wrote it, or a conversation in another layout as `pair_prompt`.
PAIR_PROMPTS = PromptTexts(HH, _as_written, pair_prompt)


class PairFormat(InputFormat):
    """The tokenizer's pair template around (prompt, response), as `tokenizer(prompt, response)` tokenizes them."""

    style = "pair"
    layouts = PAIR_PROMPTS.layouts

    def __init__(self, tokenizer: Tokenizer, max_length: int):
        self.tokenizer = plain(tokenizer)
        self.max_length = max_length
        self.budget = max_length - tokenizer.num_special_tokens_to_add(is_pair=True)
        if self.budget < 2:
            raise ValueError(f"max_length {max_length} leaves no room for text")
        self.window = TextWindow(self.tokenizer, max_length)

    def encode(self, exchanges: Sequence[Exchange]) -> list[Encoding]:
        prompts = self.window.encode(
            per_prompt(exchanges, lambda exchange: PAIR_PROMPTS.text(exchange.prompt, exchange.prompt_text)), "end"
        )
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


class TextFormat(InputFormat):
    """`tokenizer(prompt + response + eos)`: one sequence, the tokenizer's special tokens around it, and the EOS
    appended unless the response already ends with it (TRL's RewardTrainer on plain data). The sequence has no layout
    of its own to render into: a prompt sent as text is kept as written, whatever it holds; a conversation sent as
    messages becomes `pair_prompt`."""

    style = "text"

    def __init__(self, tokenizer: Tokenizer, max_length: int, eos_token: str | None):
        self.tokenizer = plain(tokenizer)
        self.max_length = max_length
        self.eos_token = eos_token
        self.window = TextWindow(self.tokenizer, max_length)

    def encode(self, exchanges: Sequence[Exchange]) -> list[Encoding]:
        prompts = self.window.encode(per_prompt(exchanges, text_prompt), "end")
        responses = self.window.encode([exchange.response for exchange in exchanges], "start")
        return [self._fit(prompt.text, response.text) for prompt, response in zip(prompts, responses, strict=True)]

    def text(self, prompt: str, response: str) -> str:
        """The sequence the trainer tokenized."""
        if self.eos_token is None or response.endswith(self.eos_token):
            return prompt + response
        return prompt + response + self.eos_token

    def _fit(self, prompt: str, response: str) -> Encoding:
        """The trainer's tokens of the whole text, cut in tokens to max_length, the EOS and the tokenizer's special
        tokens kept (rmserve.core.truncation)."""
        text = self.text(prompt, response)
        response_end = len(prompt) + len(response)
        if self.eos_token is not None and response.endswith(self.eos_token):
            response_end -= len(self.eos_token)  # the response's own EOS is kept as an appended one would be
        encoding = self.tokenizer.encode(text, add_special_tokens=True)
        ids = fit_tokens(encoding, len(prompt), response_end, self.max_length)
        return Encoding(ids, len(ids) < len(encoding.ids), response_tokens=token_count(self.tokenizer, response))

    def to_manifest(self) -> dict[str, Any]:
        return {"style": self.style, "eos_token": self.eos_token}


def text_prompt(exchange: Exchange) -> str:
    """The prompt of a `text` sequence: as the caller or the data file wrote it, else its turns as `pair_prompt`."""
    return exchange.prompt_text if exchange.prompt_text is not None else pair_prompt(exchange.prompt)


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
        end (rmserve.core.truncation)."""
        turns, response, field = list(exchange.prompt), exchange.response, exchange.field
        response_tokens = token_count(self.tokenizer, exchange.response)
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
        earlier, last = head + body[:-1], body[-1:]

        def ids_of(content: str, cut_response: str) -> list[int]:
            return self._ids(earlier + [Turn(turn.role, content) for turn in last], cut_response, field)

        ids, _ = fit_rendered(ids_of, self.tokenizer, last[0].content if last else "", response, self.max_length)
        return Encoding(ids, truncated=True, response_tokens=response_tokens)

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
    if style == "text":
        eos_token = spec.get("eos_token")
        if eos_token is not None and (not isinstance(eos_token, str) or not eos_token):
            raise ValueError("input_format.eos_token must be the token string the trainer appended, or null")
        return TextFormat(tokenizer, max_length, eos_token)
    if style == "chat_template":
        source, special_tokens = spec.get("template"), spec.get("special_tokens", {})
        if not isinstance(source, str) or not source:
            raise ValueError("input_format.template must be the chat template's Jinja source")
        if not isinstance(special_tokens, Mapping):
            raise ValueError("input_format.special_tokens must map names (bos_token, ...) to token strings")
        template = ChatTemplate(source, {str(name): str(token) for name, token in special_tokens.items()})
        return ChatTemplateFormat(template, source, tokenizer, max_length)
    raise ValueError(f"unsupported input_format.style {style!r} (supported: {', '.join(STYLES)})")
