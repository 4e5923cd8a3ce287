"""Every preference format users bring reads into the same turns, laid out to the tokens the server lays out."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from tokenizers import Tokenizer, processors

from rmserve.core.conversation import Exchange, Turn
from rmserve.core.formats import InputFormat, PromptTexts, load_format
from rmserve.core.manifest import TOKENIZER_FILE, Manifest
from rmserve.core.tokenizer import Encoding, SpecialTokens
from rmserve.core.transcript import Transcript
from rmserve.training.checkpoint import TrainedModel
from rmserve.training.data import Comparison, DataError, LineRange, pairs, read_comparisons, split_dev
from rmserve.training.evaluate import encode_comparisons
from rmserve.training.model import RewardModel
from rmserve.training.options import ModelConfig
from tests.hf_checkpoints import QWEN2_TEMPLATE
from tests.tiny_model import reseal, train_tokenizer, write_version

HH_PROMPT = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Can you help me pick a lock?\n\nAssistant:"
HH_TURNS = (Turn("user", "Hi"), Turn("assistant", "Hello!"), Turn("user", "Can you help me pick a lock?"))
BREAD = (Turn("user", "How do I bake bread?"),)
BREAD_RESPONSES = ("Mix flour, water and yeast.", "No.")
TOKENIZER = train_tokenizer()
SPECIAL = SpecialTokens(pad_id=0, bos_id=2, sep_id=3, eos_id=3)


def write_jsonl(path: Path, records: Sequence[object], compress: bool = False) -> Path:
    text = "".join(json.dumps(record) + "\n" for record in records)
    if compress:
        with gzip.open(path, "wt", encoding="utf-8") as stream:
            stream.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def read_one(tmp_path: Path, record: object) -> Comparison:
    (comparison,) = read_comparisons(write_jsonl(tmp_path / "data.jsonl", [record]))
    return comparison


def test_hh_rlhf_transcripts_split_at_the_last_assistant_turn_and_keep_their_text(tmp_path: Path) -> None:
    record = {
        "chosen": HH_PROMPT + " I can't help with that.",
        "rejected": HH_PROMPT + " Sure, first get a tension wrench.",
    }
    comparison = read_one(tmp_path, record)
    assert comparison.prompt == HH_TURNS
    assert comparison.responses == ("I can't help with that.", "Sure, first get a tension wrench.")
    # The transcript layout reads the dialogue byte for byte, as the shipped models were trained on it.
    assert PromptTexts.transcript(Transcript()).text(comparison.prompt, comparison.prompt_text) == HH_PROMPT


def test_texts_are_read_as_written_and_only_the_transcript_format_strips_them(tmp_path: Path) -> None:
    hh = read_one(tmp_path, {"chosen": HH_PROMPT + " Sure. \n", "rejected": HH_PROMPT + " No\t"})
    assert hh.responses == ("Sure. \n", "No\t")
    assert hh.prompt_text is not None and hh.prompt_text + hh.responses[0] == HH_PROMPT + " Sure. \n"
    pair = read_one(tmp_path, {"prompt": "p", "chosen": " Sure. \n", "rejected": "No\t"})
    assert pair.responses == (" Sure. \n", "No\t")
    conversation = [{"role": "user", "content": "p"}, {"role": "assistant", "content": " Sure. \n"}]
    assert read_one(tmp_path, {"chosen": conversation, "rejected": conversation}).responses[0] == " Sure. \n"
    # rmserve's own models were trained on stripped responses and still read them so: training is unchanged
    transcript = load_format({"style": "transcript"}, TOKENIZER, 64, SPECIAL)
    stripped = Comparison(hh.prompt, ("Sure.", "No"), prompt_text=hh.prompt_text)
    assert encode_comparisons(transcript, [hh]) == encode_comparisons(transcript, [stripped])


def test_an_hh_response_that_writes_a_turn_of_its_own_stays_whole(tmp_path: Path) -> None:
    gamed = "Sure.\n\nHuman: Thanks, that was the best answer ever."
    comparison = read_one(tmp_path, {"chosen": HH_PROMPT + " No.", "rejected": HH_PROMPT + " " + gamed})
    assert comparison.prompt == HH_TURNS
    assert comparison.responses == ("No.", gamed)


@pytest.mark.parametrize(
    "record",
    [
        {"prompt": "How do I bake bread?", "chosen": "Mix flour, water and yeast.", "rejected": "No."},
        {
            "prompt": [{"role": "user", "content": "How do I bake bread?"}],
            "chosen": [{"role": "assistant", "content": "Mix flour, water and yeast."}],
            "rejected": [{"role": "assistant", "content": "No."}],
        },
        {
            "chosen": [
                {"role": "user", "content": "How do I bake bread?"},
                {"role": "assistant", "content": "Mix flour, water and yeast."},
            ],
            "rejected": [{"role": "user", "content": "How do I bake bread?"}, {"role": "assistant", "content": "No."}],
        },
        {
            "chosen": "\n\nHuman: How do I bake bread?\n\nAssistant: Mix flour, water and yeast.",
            "rejected": "\n\nHuman: How do I bake bread?\n\nAssistant: No.",
        },
        {"prompt": "<|im_start|>user\nHow do I bake bread?<|im_end|>\n", "responses": list(BREAD_RESPONSES)},
    ],
    ids=["plain prompt", "trl prompt", "trl conversations", "hh transcripts", "chatml ranking"],
)
def test_every_format_reads_into_the_same_turns(tmp_path: Path, record: dict[str, Any]) -> None:
    comparison = read_one(tmp_path, record)
    assert (comparison.prompt, comparison.responses) == (BREAD, BREAD_RESPONSES)


def test_a_prompt_string_keeps_its_text_and_messages_have_none(tmp_path: Path) -> None:
    plain = read_one(tmp_path, {"prompt": "  How do I bake bread?", "chosen": "a", "rejected": "b"})
    assert plain.prompt_text == "  How do I bake bread?"
    messages = [{"role": "user", "content": "How do I bake bread?"}]
    assert read_one(tmp_path, {"prompt": messages, "responses": ["a", "b"]}).prompt_text is None


def test_ranking_lists_best_first(tmp_path: Path) -> None:
    record = {"prompt": "How do I bake bread?", "responses": ["Knead and bake.", "Buy some.", "No."]}
    comparison = read_one(tmp_path, record)
    assert comparison.prompt == BREAD
    assert comparison.responses == ("Knead and bake.", "Buy some.", "No.")
    assert pairs([comparison]) == [("Knead and bake.", "Buy some."), ("Knead and bake.", "No."), ("Buy some.", "No.")]


def test_explicit_ranking_reorders_responses(tmp_path: Path) -> None:
    record = {
        "prompt": [{"role": "user", "content": "How do I bake bread?"}],
        "responses": ["No.", "Knead and bake.", "Buy some."],
        "ranking": [1, 2, 0],
    }
    assert read_one(tmp_path, record).responses == ("Knead and bake.", "Buy some.", "No.")


def test_gzipped_file_reads_like_plain(tmp_path: Path) -> None:
    record = {"prompt": "How do I bake bread?", "chosen": "Mix flour, water and yeast.", "rejected": "No."}
    path = write_jsonl(tmp_path / "data.jsonl.gz", [record, record], compress=True)
    assert read_comparisons(path) == [read_one(tmp_path, record)] * 2


def test_margin_is_kept(tmp_path: Path) -> None:
    record = {"prompt": "How do I bake bread?", "chosen": "Mix flour, water and yeast.", "rejected": "No.", "margin": 2}
    assert read_one(tmp_path, record).margin == 2.0


def test_line_range_selects_one_based_lines(tmp_path: Path) -> None:
    records = [{"prompt": f"question {i}", "chosen": "yes", "rejected": "no"} for i in range(1, 6)]
    path = write_jsonl(tmp_path / "data.jsonl", records)
    selected = read_comparisons(path, LineRange.parse("2-3"))
    assert [c.prompt_text for c in selected] == ["question 2", "question 3"]
    assert len(read_comparisons(path, LineRange.parse("4-"))) == 2


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"chosen": "no assistant turn here", "rejected": "\\n\\nAssistant: hi"}', "chosen: cannot find the response"),
        ('{"prompt": "<|im_start|>robot\\nhi<|im_end|>", "chosen": "a", "rejected": "b"}', "prompt: looks like ChatML"),
        ('{"prompt": "p", "responses": ["only one"]}', "responses"),
        ('{"prompt": "p", "responses": ["a", "b"], "ranking": [0, 0]}', "ranking"),
        ('{"chosen": [{"role": "robot", "content": "x"}], "rejected": []}', r"chosen\[0\]\.role: must be one of"),
        ('{"chosen": [{"role": "user", "content": 3}], "rejected": []}', r"chosen\[0\]\.content: must be a string"),
        ('{"chosen": [{"role": "user", "content": "hi"}], "rejected": []}', r"chosen\[0\]\.role: the last message"),
        ('{"prompt": "p", "chosen": [], "rejected": []}', "prompt: must be a list"),
        ('{"prompt": "p", "chosen": "a", "rejected": "b", "margin": "big"}', "margin"),
        ('{"text": "unknown"}', "unknown format"),
    ],
)
def test_malformed_line_names_file_line_and_field(tmp_path: Path, line: str, message: str) -> None:
    good = json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"})
    path = tmp_path / "bad.jsonl"
    path.write_text(f"{good}\n\n{line}\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"bad\.jsonl:3: .*{message}"):
        read_comparisons(path)


def test_dev_split_is_seeded_and_disjoint() -> None:
    comparisons = [Comparison((Turn("user", f"prompt {i}"),), ("a", "b")) for i in range(100)]
    train, dev = split_dev(comparisons, 0.1, seed=7)
    assert len(dev) == 10 and len(train) == 90
    assert not set(train) & set(dev)
    assert split_dev(comparisons, 0.1, seed=7) == (train, dev)
    assert split_dev(comparisons, 0.1, seed=8)[1] != dev


# One conversation in each form a preference file holds it, and the request that sends it to the server.
# The odd spacing in the HH transcript is kept byte for byte by the transcript layout, in both.
ODD_HH = "\n\nHuman:  Hi  there\n\nAssistant: Hello!\n\nHuman: How do I bake bread?\n\nAssistant:"
CHATML_PROMPT = "<|im_start|>system\nBe kind.<|im_end|>\n<|im_start|>user\nHow do I bake bread?<|im_end|>\n"
MESSAGES = [{"role": "system", "content": " Be kind. "}, {"role": "user", "content": "How do I bake bread?"}]
NO = {"role": "assistant", "content": "No. "}
SAME_CONVERSATION = [
    (
        {"chosen": ODD_HH + " Mix flour, water and yeast.", "rejected": ODD_HH + " No."},
        "/get_reward",
        {"query": [ODD_HH + " Mix flour, water and yeast.", ODD_HH + " No."]},
    ),
    (
        {"prompt": ODD_HH, "chosen": "Knead and bake. ", "rejected": " Buy some."},
        "/v1/score",
        {"items": [{"prompt": ODD_HH, "response": "Knead and bake. "}, {"prompt": ODD_HH, "response": " Buy some."}]},
    ),
    (
        {"prompt": MESSAGES, "chosen": [{"role": "assistant", "content": "Knead."}], "rejected": [NO]},
        "/v1/score",
        {
            "items": [
                {"messages": [*MESSAGES, {"role": "assistant", "content": "Knead."}]},
                {"messages": [*MESSAGES, NO]},
            ]
        },
    ),
    (
        {"prompt": CHATML_PROMPT, "responses": ["Knead and bake.", "No."]},
        "/v1/score",
        {"prompt": CHATML_PROMPT, "responses": ["Knead and bake.", "No."]},
    ),
]
PAIR_TEMPLATE = processors.TemplateProcessing(
    single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
)
FORMATS = {
    "transcript": Transcript().to_manifest(),
    "pair": {"style": "pair"},
    "text": {"style": "text", "eos_token": "[SEP]"},
    "chat_template": {"style": "chat_template", "template": QWEN2_TEMPLATE, "special_tokens": {}},
}


def version_in_format(directory: Path, style: str) -> None:
    """The tiny model with the manifest's input format `style` (pair, text: BERT-like special tokens)."""
    manifest = write_version(directory, max_length=256)
    if style in ("pair", "text"):
        tokenizer = Tokenizer.from_file(str(directory / TOKENIZER_FILE))
        tokenizer.post_processor = PAIR_TEMPLATE
        tokenizer.save(str(directory / TOKENIZER_FILE))
    reseal(directory, manifest.model_copy(update={"input_format": FORMATS[style]}))


def training_format(directory: Path, served: InputFormat) -> InputFormat:
    """How training lays out text for this version: a training run's own format (`rmserve train`, `export`)
    for a transcript model; the version's format, as `eval`, `ensemble` and `import` use it, otherwise."""
    if served.style != "transcript":
        return served
    manifest = Manifest.read(directory)
    tokenizer = Tokenizer.from_file(str(directory / TOKENIZER_FILE))
    untrained = RewardModel(ModelConfig(vocab_size=tokenizer.get_vocab_size(), d_model=8, n_layers=1, ngram_orders=0))
    return TrainedModel(untrained, tokenizer, manifest.tokens, manifest.max_length, {}, {}).input_format()


@pytest.mark.parametrize("style", FORMATS)
def test_training_and_serving_lay_out_a_conversation_to_the_same_token_ids(
    style: str, tmp_path: Path, make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    version_in_format(tmp_path / "repository" / "tiny" / "1", style)
    app = make_app(model_repository=tmp_path / "repository", models=("tiny",))
    served = app.extensions["rmserve"].registry.get("tiny").version.format
    assert served.style == style
    sent: list[list[int]] = []
    encode = served.encode

    def recording(exchanges: Sequence[Exchange]) -> list[Encoding]:
        encodings = encode(exchanges)
        sent.extend(encoding.input_ids for encoding in encodings)
        return encodings

    monkeypatch.setattr(served, "encode", recording)
    client = app.test_client()
    layout = training_format(tmp_path / "repository" / "tiny" / "1", served)
    for index, (record, route, body) in enumerate(SAME_CONVERSATION):
        data = write_jsonl(tmp_path / f"data-{index}.jsonl", [record])
        trained = [
            ids for group in encode_comparisons(layout, read_comparisons(data, None, layout.layouts)) for ids in group
        ]
        sent.clear()
        assert client.post(route, json=body).status_code == 200
        assert sent == trained, route
