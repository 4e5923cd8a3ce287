"""HH transcripts: the one rendering of prompts and conversations that training and serving share."""

from __future__ import annotations

import pytest

from rmserve.core.transcript import Transcript
from rmserve.errors import InvalidField

FORMAT = Transcript()


def test_plain_prompt_becomes_one_user_turn() -> None:
    assert FORMAT.prompt_text("How do I bake bread?") == "\n\nHuman: How do I bake bread?\n\nAssistant:"


def test_transcript_prompt_is_kept_and_closed_with_the_assistant_marker() -> None:
    dialogue = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: bread?"
    assert FORMAT.prompt_text(dialogue) == dialogue + "\n\nAssistant:"
    assert FORMAT.prompt_text(dialogue + "\n\nAssistant:") == dialogue + "\n\nAssistant:"


def test_hh_transcript_splits_at_the_last_assistant_turn_into_its_own_text() -> None:
    text = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: bread?\n\nAssistant: Knead it. \n"
    prompt, response = FORMAT.split_transcript(text)
    assert prompt == "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: bread?\n\nAssistant: "
    assert response == "Knead it. \n"  # prompt + response is the transcript, byte for byte


def test_custom_role_names_from_the_manifest() -> None:
    chat = Transcript.from_manifest({"style": "transcript", "roles": {"user": "User", "assistant": "Bot"}})
    assert chat.prompt_text("hi") == "\n\nUser: hi\n\nBot:"
    assert Transcript.from_manifest(chat.to_manifest()) == chat


def test_errors_name_the_field() -> None:
    with pytest.raises(InvalidField) as error:
        FORMAT.render_turns([{"role": "robot", "content": "hi"}], "items[2].messages")
    assert error.value.field == "items[2].messages[0].role"
    with pytest.raises(InvalidField) as error:
        FORMAT.split_transcript("no markers here", "query[0]")
    assert error.value.field == "query[0]"
