"""Text handling is linear in its input: degenerate texts (runs of whitespace, repeated markers, mixes) cost the
same per character at 8k and at 64k characters. A quadratic pattern or loop shows as 8 times the cost per
character at the larger size; the bound allows 3 times, for a shared machine's noise."""

from __future__ import annotations

import time
from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from rmserve.core.layouts import LAYOUTS, LayoutError, detect, has_turn_markers, prompt_turns, strip_end_tokens
from rmserve.core.transcript import Transcript
from rmserve.errors import InvalidField

SMALL, LARGE = 8_000, 64_000  # characters
GROWTH = 3 * LARGE / SMALL  # allowed cost ratio: linear is 8, quadratic 64
FLOOR_S = 0.002  # timings below this are noise: a small text that fast only has to stay fast
SECONDS_PER_MB = 1.0  # a generous ceiling: linear code takes milliseconds per MB

# What a policy gaming its reward repeats: whitespace, turn markers of every layout, end tokens, words.
UNITS = (
    " ",
    "\n",
    "\t",
    "\r\n",
    "\n\n",
    "\u3000",
    "a",
    "word ",
    "[INST]",
    "[/INST]",
    "[SYSTEM_PROMPT]",
    "</s>",
    "<s>",
    "<|im_start|>",
    "<|im_start|>user\n",
    "<|im_end|>",
    "<|endoftext|>",
    "<|start_header_id|>",
    "<|end_header_id|>\n\n",
    "<|eot_id|>",
    "<start_of_turn>",
    "<end_of_turn>",
    "Human:",
    "\n\nHuman: ",
    "\n\nAssistant:",
    "Assistant",
)
TRANSCRIPT = Transcript()


def _tolerant(function: Callable[[str], object]) -> Callable[[str], object]:
    """A text that does not parse is an answer too (a 422): what matters is how long it took."""

    def call(text: str) -> object:
        try:
            return function(text)
        except (InvalidField, LayoutError):
            return None

    return call


HANDLERS: dict[str, Callable[[str], object]] = {
    "has_turn_markers": has_turn_markers,
    "strip_end_tokens": strip_end_tokens,
    "prompt_turns": _tolerant(lambda text: prompt_turns(text, "prompt")),
    "detect": detect,
    **{f"parse {layout.name}": _tolerant(layout.parse) for layout in LAYOUTS},
    "transcript prompt_text": TRANSCRIPT.prompt_text,
    "transcript split": _tolerant(TRANSCRIPT.split_transcript),
}

HEADS = ("", "a", "hi", "<s>", "<|im_start|>assistant\n", "\n\nHuman: hi\n\nAssistant:", "[INST] hi [/INST]")
degenerate = st.tuples(
    st.sampled_from(HEADS),
    st.lists(st.sampled_from(UNITS), min_size=1, max_size=3).map("".join),
    st.sampled_from(("", "b", "x", "</s>", "<|im_end|>", "[/INST]", "\n\nAssistant: ok")),
)


def seconds(function: Callable[[str], object], text: str) -> float:
    """The fastest of three runs: the least disturbed by other work on the machine."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        function(text)
        best = min(best, time.perf_counter() - started)
    return best


def sized(parts: tuple[str, str, str], characters: int) -> str:
    head, repeated, tail = parts
    return head + repeated * (characters // len(repeated)) + tail


@settings(max_examples=60, deadline=None)
@given(degenerate)
def test_text_handling_costs_the_same_per_character_at_any_size(parts: tuple[str, str, str]) -> None:
    small, large = sized(parts, SMALL), sized(parts, LARGE)
    for name, handle in HANDLERS.items():
        small_s, large_s = seconds(handle, small), seconds(handle, large)
        assert large_s <= GROWTH * max(small_s, FLOOR_S), (name, parts, small_s, large_s)
        assert large_s <= SECONDS_PER_MB * len(large) / 1e6, (name, parts, large_s)
