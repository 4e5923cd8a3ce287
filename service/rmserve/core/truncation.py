"""Cutting a rendered sequence to `max_length`: the start of the prompt and the end of the response, at token
boundaries of the text as written, re-rendered after each cut so the layout's own tokens stay whole.

The `text` and `chat_template` formats (rmserve.core.formats) render prompt and response into one
text; a cut item then equals the trainer's own tokenization of the cut text.
"""

from __future__ import annotations

from collections.abc import Callable

from tokenizers import Tokenizer

from rmserve.core.tokenizer import fit_pair

# Re-renders allowed while cutting to max_length (token merges at a cut can add one or two).
MAX_CUTS = 4


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
