"""Input formats: the manifest's style decides the layout; chat templates render as transformers does; truncation."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from rmserve.core.chat_template import ChatTemplate, TemplateError
from rmserve.core.conversation import Exchange, Turn
from rmserve.core.formats import ChatTemplateFormat, PromptTexts, load_format
from rmserve.core.layouts import prompt_turns
from rmserve.core.tokenizer import SpecialTokens
from rmserve.core.transcript import Transcript
from rmserve.errors import InvalidField
from tests.conftest import DEFAULT_REPOSITORY
from tests.hf_checkpoints import QWEN2_TEMPLATE, _tokenizer
from tests.tiny_model import TOKENS

TOKENIZER = _tokenizer(["<|endoftext|>", "<|unk|>", "<|im_start|>", "<|im_end|>"])
NO_SPECIAL = SpecialTokens(pad_id=0, bos_id=None, sep_id=None, eos_id=None)


def chat_format(max_length: int, template: str = QWEN2_TEMPLATE) -> ChatTemplateFormat:
    spec = {"style": "chat_template", "template": template, "special_tokens": {"eos_token": "<|im_end|>"}}
    chat = load_format(spec, Tokenizer.from_str(TOKENIZER.to_str()), max_length, NO_SPECIAL)
    assert isinstance(chat, ChatTemplateFormat)
    return chat


def test_template_renders_like_transformers() -> None:
    from transformers import PreTrainedTokenizerFast

    template = (
        "{% for m in messages %}{% if m['role'] == 'assistant' %}{% generation %}{{ m['content'] | tojson }}"
        "{% endgeneration %}{% else %}{{ bos_token }}{{ m['content'] }}\n{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}>>{% endif %}"
    )
    hf = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(TOKENIZER.to_str()), bos_token="<|im_start|>")
    hf.chat_template = template
    messages = [{"role": "user", "content": "café <b>"}, {"role": "assistant", "content": 'ça "va"'}]
    ours = ChatTemplate(template, hf.special_tokens_map)
    for generation in (False, True):
        expected = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)
        assert ours.render(messages, add_generation_prompt=generation) == expected


def test_template_refusals_and_sandbox_escapes_are_errors() -> None:
    with pytest.raises(TemplateError, match="roles must alternate"):
        ChatTemplate("{{ raise_exception('roles must alternate') }}", {}).render([])
    with pytest.raises(TemplateError):
        ChatTemplate("{{ messages.__class__.__mro__ }}{{ ''.__class__.__subclasses__() }}", {}).render([])
    refusing = chat_format(64, "{{ raise_exception('no system role') }}")
    with pytest.raises(InvalidField) as error:
        refusing.encode([Exchange((Turn("user", "hi"),), "yo", "items[4].messages")])
    assert error.value.field == "items[4].messages"


def test_long_conversation_keeps_the_response_and_the_end_of_the_conversation() -> None:
    chat = chat_format(90)
    turns = (
        Turn("user", "The quick brown fox jumps over the lazy dog near the river bank. " * 3),
        Turn("assistant", "I'm sorry, I can't help with that."),
        Turn("user", "What is the capital of France?"),
    )
    (encoding,) = chat.encode([Exchange(turns, "Paris is the capital of France.", "items[0]")])
    assert encoding.truncated and len(encoding.input_ids) <= 90
    text = TOKENIZER.decode(encoding.input_ids, skip_special_tokens=False)
    assert text.endswith("Paris is the capital of France.<|im_end|>\n")
    assert "What is the capital of France?" in text
    assert "quick brown fox" not in text


def test_one_long_turn_is_cut_from_its_start_and_a_long_response_from_its_end() -> None:
    chat = chat_format(110)
    prompt = (Turn("user", "Reward models score responses. " * 10 + "Final question?"),)
    (encoding,) = chat.encode([Exchange(prompt, "Mix flour and water. " * 20, "items[0]")])
    assert encoding.truncated and len(encoding.input_ids) <= 110
    text = TOKENIZER.decode(encoding.input_ids, skip_special_tokens=False)
    assert "Final question?" in text and text.startswith("<|im_start|>system")
    assert text.endswith("<|im_end|>\n")  # the template closed the cut response: the score token is real


def test_short_items_are_not_truncated_and_unknown_styles_are_refused() -> None:
    (encoding,) = chat_format(256).encode([Exchange((Turn("user", "hi"),), "hello", "items[0]")])
    assert not encoding.truncated
    with pytest.raises(ValueError, match=r"unsupported input_format\.style 'jinja'"):
        load_format({"style": "jinja"}, TOKENIZER, 64, NO_SPECIAL)
    with pytest.raises(ValueError, match="template"):
        load_format({"style": "chat_template"}, TOKENIZER, 64, NO_SPECIAL)


def test_a_transcript_model_reads_its_own_layout_as_written_and_renders_any_other_from_turns() -> None:
    prompts = PromptTexts.transcript(Transcript())
    odd = "\n\nHuman:  Hi  there\n\nAssistant: Hello!\n\nHuman: Bread?"
    assert prompts.text(prompt_turns(odd, "prompt"), odd) == odd + "\n\nAssistant:"  # HH data's spacing kept
    chatml = "<|im_start|>user\nBread?<|im_end|>\n"
    assert prompts.text(prompt_turns(chatml, "prompt"), chatml) == "\n\nHuman: Bread?\n\nAssistant:"
    assert prompts.text((Turn("user", "Bread?"),), None) == "\n\nHuman: Bread?\n\nAssistant:"
    bot = PromptTexts.transcript(Transcript.from_manifest({"roles": {"user": "User", "assistant": "Bot"}}))
    assert (
        bot.text(prompt_turns(odd, "prompt", bot.layouts), odd)
        == "\n\nUser: Hi  there\n\nBot: Hello!\n\nUser: Bread?\n\nBot:"
    )


# WordPiece splits these into several pieces (hypo ##cr ##ites): a cut inside one must not make a word of its end.
WORDS = ["hypocrites", "electrocuting", "Assistant:", "bread", "\n\n", "  ", "ça", "🙂", ",", "unbelievably"]


@settings(max_examples=60, deadline=None)
@given(prompt=st.lists(st.sampled_from(WORDS), max_size=120).map(" ".join), max_length=st.integers(8, 64))
@example(prompt="who would you kill? " + " hypocrites than anyone" * 30, max_length=48)
def test_a_text_model_reads_a_long_prompt_as_transformers_left_truncation_cuts_it(prompt: str, max_length: int) -> None:
    """The kept tokens are the last ones transformers makes of the whole text, as `truncation_side="left"` keeps
    them: cutting the text and tokenizing it again would read `cr ##ites` where the trainer's tokenizer read
    `hypo ##cr ##ites`."""
    from transformers import PreTrainedTokenizerFast

    minilm = str(DEFAULT_REPOSITORY / "hh-harmless-minilm" / "1" / "tokenizer.json")
    text_format = load_format({"style": "text", "eos_token": "[SEP]"}, Tokenizer.from_file(minilm), max_length, TOKENS)
    hf = PreTrainedTokenizerFast(tokenizer_file=minilm, truncation_side="left")
    response = " OK."  # short: a cut takes only the prompt's start
    (encoding,) = text_format.encode([Exchange((), response, "x", prompt_text=prompt)])
    whole = hf(prompt + response + "[SEP]")["input_ids"]
    assert encoding.truncated == (len(whole) > max_length)
    assert encoding.input_ids == hf(prompt + response + "[SEP]", truncation=True, max_length=max_length)["input_ids"]
