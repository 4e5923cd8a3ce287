"""Cutting a rendered sequence to `max_length`: the start of the prompt and the end of the response.

The `text` format (rmserve.core.formats) is one tokenization of one text, so it is cut in tokens
(`fit_tokens`): what the model reads is a run of the tokens the trainer's tokenizer made of the whole
text, as a tokenizer's own truncation cuts. Cutting the text instead and tokenizing it again could
start inside a word and split it differently (`hypocrites` -> `hypo ##cr ##ites`, cut to `cr ##ites`).
The `chat_template` format must re-render its template around the cut texts (`fit_rendered`), cut
at token boundaries of the text as written.
"""

from __future__ import annotations

from collections.abc import Callable

from tokenizers import Encoding as TokenizerEncoding
from tokenizers import Tokenizer

from rmserve.core.tokenizer import fit_pair

# Re-renders allowed while cutting to max_length (token merges at a cut can add one or two).
MAX_CUTS = 4


def fit_tokens(encoding: TokenizerEncoding, prompt_end: int, response_end: int, max_length: int) -> list[int]:
    """The ids of `encoding` (of one text: the prompt up to character `prompt_end`, the response up to
    `response_end`, then what the layout appends) without the prompt's first and the response's last tokens, as
    many as `max_length` needs (shared as `fit_pair` shares a budget); the tokenizer's special tokens and what
    follows the response are kept. A token is the prompt's or the response's by where it starts."""
    ids = encoding.ids
    if len(ids) <= max_length:
        return list(ids)
    prompt: list[int] = []  # positions in `ids`
    response: list[int] = []
    for index, (sequence, (start, _)) in enumerate(zip(encoding.sequence_ids, encoding.offsets, strict=True)):
        if sequence is not None and start < response_end:
            (prompt if start < prompt_end else response).append(index)
    layout = len(ids) - len(prompt) - len(response)
    kept_prompt, kept_response = fit_pair(len(prompt), len(response), max_length - layout)
    dropped = set(prompt[: len(prompt) - kept_prompt]) | set(response[kept_response:])
    kept = [token for index, token in enumerate(ids) if index not in dropped]
    # Still too long only if the special tokens and what follows the response fill max_length: keep the end.
    return kept[-max_length:]


def fit_rendered(
    ids_of: Callable[[str, str], list[int]], tokenizer: Tokenizer, prompt: str, response: str, max_length: int
) -> tuple[list[int], bool]:
    """`ids_of(prompt, response)` within `max_length`, cut as often as needed, and whether it was cut."""
    ids, truncated = ids_of(prompt, response), False
    for _ in range(MAX_CUTS):
        if len(ids) <= max_length:
            return ids, truncated
        prompt, response = cut_pair(tokenizer, prompt, response, len(ids) - max_length)
        ids, truncated = ids_of(prompt, response), True
    # Only a layout longer than max_length on its own gets here: keep the end, where a decoder reads the score.
    return ids[-max_length:], True


def cut_pair(tokenizer: Tokenizer, prompt: str, response: str, excess: int) -> tuple[str, str]:
    """`prompt` without its first tokens and `response` without its last, `excess` tokens in all (shared as
    `fit_pair` shares a budget)."""
    prompt_tokens = tokenizer.encode(prompt, add_special_tokens=False)
    response_tokens = tokenizer.encode(response, add_special_tokens=False)
    full = (len(prompt_tokens.ids), len(response_tokens.ids))
    prompt_kept, response_kept = fit_pair(*full, sum(full) - excess)
    if response_kept < full[1]:
        response = response[: response_tokens.offsets[response_kept][0]] if response_kept else ""
    if prompt_kept < full[0]:
        prompt = prompt[prompt_tokens.offsets[full[0] - prompt_kept][0] :] if prompt_kept else ""
    return prompt, response


def token_count(tokenizer: Tokenizer, text: str) -> int:
    """A text's tokens on its own (a whole response's, as the length flags read it: rmserve.engine.flags)."""
    return len(tokenizer.encode(text, add_special_tokens=False).ids)
