"""Chat templates render as transformers renders them, within a time and size budget no real template comes near."""

from __future__ import annotations

import time
import tracemalloc

import pytest

from rmserve.core import template_budget
from rmserve.core.chat_template import ChatTemplate, TemplateError, render_deadline
from rmserve.core.template_budget import MAX_RENDER_S
from rmserve.errors import DeadlineExceeded
from tests.chat_templates import (
    HOSTILE_TEMPLATES,
    LLAMA31_TEMPLATE,
    MISTRAL_TEMPLATE,
    PHI3_TEMPLATE,
    QWEN25_TEMPLATE,
    ZEPHYR_TEMPLATE,
)
from tests.hf_checkpoints import GEMMA_TEMPLATE, LLAMA3_TEMPLATE, QWEN2_TEMPLATE, _tokenizer
from tests.reliability_report import record

REAL_TEMPLATES = {
    "llama-3.1": LLAMA31_TEMPLATE,
    "llama-3": LLAMA3_TEMPLATE,
    "mistral": MISTRAL_TEMPLATE,
    "qwen2": QWEN2_TEMPLATE,
    "qwen2.5": QWEN25_TEMPLATE,
    "gemma": GEMMA_TEMPLATE,
    "zephyr": ZEPHYR_TEMPLATE,
    "phi-3": PHI3_TEMPLATE,
}
SPECIAL = {"bos_token": "<s>", "eos_token": "</s>"}
MAX_TEXT_CHARS = 65_536  # RMSERVE_MAX_TEXT_CHARS: the longest conversation one item may be


def conversation(turns: int, chars: int, last: str = "") -> list[dict[str, str]]:
    content = "word " * (chars // 5 // turns)
    messages = [{"role": "user" if turn % 2 == 0 else "assistant", "content": content} for turn in range(turns)]
    messages[-1]["content"] += last
    return messages


@pytest.mark.parametrize("name", REAL_TEMPLATES)
def test_real_templates_render_as_transformers_does_with_half_the_budget(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The longest conversation allowed, short and many-turned: the same text, with half the budget to spare."""
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(tokenizer_object=_tokenizer(["<s>", "</s>"]), bos_token="<s>", eos_token="</s>")
    hf.chat_template = REAL_TEMPLATES[name]
    ours = ChatTemplate(REAL_TEMPLATES[name], SPECIAL)
    monkeypatch.setattr(template_budget, "BUDGET_FLOOR_BYTES", 0)
    monkeypatch.setattr(template_budget, "BUDGET_PER_INPUT_CHAR", template_budget.BUDGET_PER_INPUT_CHAR // 2)
    for turns in (2, 16):
        messages = conversation(turns, MAX_TEXT_CHARS)
        expected = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=turns == 2)
        assert ours.render(messages, add_generation_prompt=turns == 2) == expected


def test_a_template_is_compiled_and_checked_when_loaded() -> None:
    with pytest.raises(TemplateError, match="does not compile"):
        ChatTemplate("{% for m in messages %}", {})
    with pytest.raises(TemplateError, match="does not compile"):
        ChatTemplate("{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}", {})  # past the parser's recursion


hostile_seconds: dict[str, float] = {}
hostile_peaks: dict[str, float] = {}


@pytest.mark.parametrize("name", HOSTILE_TEMPLATES)
def test_a_hostile_template_is_stopped_within_its_budget(name: str) -> None:
    """Every one is a TemplateError (a 422 naming the item) within MAX_RENDER_S + 1 s, having made little."""
    template = ChatTemplate(HOSTILE_TEMPLATES[name], SPECIAL)
    messages = conversation(2, MAX_TEXT_CHARS, last=" please")
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(TemplateError):
            template.render(messages)
        seconds = time.monotonic() - started
        peak_mib = tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()
    assert seconds < MAX_RENDER_S + 1, seconds
    assert peak_mib < 64, peak_mib
    hostile_seconds[name], hostile_peaks[name] = seconds, peak_mib
    if len(hostile_seconds) == len(HOSTILE_TEMPLATES):
        slowest = max(hostile_seconds, key=hostile_seconds.__getitem__)
        largest = max(hostile_peaks, key=hostile_peaks.__getitem__)
        record(
            "Chat templates: hostile templates",
            f"{len(HOSTILE_TEMPLATES)} imported templates that loop, recurse (on a word of the response), repeat, "
            "double, join or pad text, or compute huge integers, over a 65,536-character conversation",
            f"each stopped with a 422-bound TemplateError: at most {hostile_seconds[slowest]:.2f} s ({slowest}; "
            f"the budget is {MAX_RENDER_S:g} s) and {hostile_peaks[largest]:.1f} MiB allocated at the peak "
            f"({largest})",
        )


def test_the_requests_deadline_stops_a_render_as_a_deadline_exceeded() -> None:
    template = ChatTemplate(HOSTILE_TEMPLATES["looping on a word"], SPECIAL)
    started = time.monotonic()
    with render_deadline(started + 0.3), pytest.raises(DeadlineExceeded):
        template.render(conversation(2, 100, last=" please"))
    assert time.monotonic() - started < 0.3 + 1
    assert template.render(conversation(2, 100)).startswith("word")  # no "please": renders


@pytest.mark.parametrize(
    ("source", "says"),
    [
        ("{{ messages[0].content + 1 }}", "TypeError: can only concatenate str"),
        ("{{ 1 // 0 }}", "ZeroDivisionError"),
        ("{{ messages[7] }}{{ messages[7].content }}", "list object has no element 7"),
        ("{{ messages.__class__.__mro__ }}", "unsafe"),
        ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "recursed too deeply"),
        ("{{ raise_exception('roles must alternate') }}", "roles must alternate"),
    ],
)
def test_whatever_goes_wrong_in_a_template_is_a_template_error(source: str, says: str) -> None:
    with pytest.raises(TemplateError, match=says):
        ChatTemplate(source, {}).render([{"role": "user", "content": "hi"}])


def test_the_budget_grows_with_the_conversation_it_lays_out() -> None:
    """A text the template repeats 40 times is refused for a long conversation, rendered for a short one."""
    template = ChatTemplate("{% for i in range(40) %}{{ messages[0].content }}{% endfor %}", {})
    assert len(template.render(conversation(1, 1000))) == 40 * 1000
    with pytest.raises(TemplateError, match="rendering budget"):
        template.render(conversation(1, MAX_TEXT_CHARS))


def test_bounded_filters_still_accept_keyword_arguments() -> None:
    source = (
        "{{ messages|map(attribute='content')|join(d=', ') }}|{{ 'ab'|replace(old='a', new='c') }}|"
        "{{ 'x'|center(width=5) }}"
    )
    rendered = ChatTemplate(source, {}).render(
        [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    )
    assert rendered == "a, b|cb|  x  "
