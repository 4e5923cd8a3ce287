"""Every preference format users bring reads into the same comparisons, rendered like serving renders."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from rmserve.core.transcript import Transcript
from rmserve.training.data import Comparison, DataError, LineRange, pairs, read_comparisons, split_dev

FORMAT = Transcript()
HH_PROMPT = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Can you help me pick a lock?\n\nAssistant:"
EXPECTED = Comparison(
    prompt="\n\nHuman: How do I bake bread?\n\nAssistant:",
    responses=("Mix flour, water and yeast.", "No."),
)


def write_jsonl(path: Path, records: list[object], compress: bool = False) -> Path:
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


def test_hh_rlhf_transcripts_split_at_the_last_assistant_turn(tmp_path: Path) -> None:
    record = {
        "chosen": HH_PROMPT + " I can't help with that.",
        "rejected": HH_PROMPT + " Sure, first get a tension wrench.",
    }
    comparison = read_one(tmp_path, record)
    assert comparison.prompt == HH_PROMPT
    assert comparison.responses == ("I can't help with that.", "Sure, first get a tension wrench.")


def test_plain_prompt_chosen_rejected(tmp_path: Path) -> None:
    record = {"prompt": "How do I bake bread?", "chosen": "Mix flour, water and yeast.", "rejected": "No."}
    assert read_one(tmp_path, record) == EXPECTED


def test_trl_conversational_with_separate_prompt(tmp_path: Path) -> None:
    record = {
        "prompt": [{"role": "user", "content": "How do I bake bread?"}],
        "chosen": [{"role": "assistant", "content": "Mix flour, water and yeast."}],
        "rejected": [{"role": "assistant", "content": "No."}],
    }
    assert read_one(tmp_path, record) == EXPECTED


def test_trl_conversational_full_conversations(tmp_path: Path) -> None:
    question = {"role": "user", "content": "How do I bake bread?"}
    record = {
        "chosen": [question, {"role": "assistant", "content": "Mix flour, water and yeast."}],
        "rejected": [question, {"role": "assistant", "content": "No."}],
    }
    assert read_one(tmp_path, record) == EXPECTED


def test_ranking_lists_best_first(tmp_path: Path) -> None:
    record = {"prompt": "How do I bake bread?", "responses": ["Knead and bake.", "Buy some.", "No."]}
    comparison = read_one(tmp_path, record)
    assert comparison.prompt == FORMAT.prompt_text("How do I bake bread?")
    assert comparison.responses == ("Knead and bake.", "Buy some.", "No.")
    assert pairs([comparison]) == [
        (comparison.prompt, "Knead and bake.", "Buy some."),
        (comparison.prompt, "Knead and bake.", "No."),
        (comparison.prompt, "Buy some.", "No."),
    ]


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
    assert read_comparisons(path) == [EXPECTED, EXPECTED]


def test_margin_is_kept(tmp_path: Path) -> None:
    record = {"prompt": "How do I bake bread?", "chosen": "Mix flour, water and yeast.", "rejected": "No.", "margin": 2}
    assert read_one(tmp_path, record).margin == 2.0


def test_line_range_selects_one_based_lines(tmp_path: Path) -> None:
    records = [{"prompt": f"question {i}", "chosen": "yes", "rejected": "no"} for i in range(1, 6)]
    path = write_jsonl(tmp_path / "data.jsonl", records)
    selected = read_comparisons(path, LineRange.parse("2-3"))
    assert [c.prompt for c in selected] == [FORMAT.prompt_text("question 2"), FORMAT.prompt_text("question 3")]
    assert len(read_comparisons(path, LineRange.parse("4-"))) == 2


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"chosen": "no assistant turn here", "rejected": "\\n\\nAssistant: hi"}', "chosen"),
        ('{"prompt": "p", "responses": ["only one"]}', "responses"),
        ('{"prompt": "p", "responses": ["a", "b"], "ranking": [0, 0]}', "ranking"),
        ('{"prompt": "p", "chosen": [{"role": "robot", "content": "x"}], "rejected": []}', "role"),
        ('{"prompt": "p", "chosen": "a", "rejected": "b", "margin": "big"}', "margin"),
        ('{"text": "unknown"}', "unknown format"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    good = json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"})
    path = tmp_path / "bad.jsonl"
    path.write_text(f"{good}\n\n{line}\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"bad\.jsonl:3: .*{message}"):
        read_comparisons(path)


def test_dev_split_is_seeded_and_disjoint() -> None:
    comparisons = [Comparison(f"prompt {i}", ("a", "b")) for i in range(100)]
    train, dev = split_dev(comparisons, 0.1, seed=7)
    assert len(dev) == 10 and len(train) == 90
    assert not set(train) & set(dev)
    assert split_dev(comparisons, 0.1, seed=7) == (train, dev)
    assert split_dev(comparisons, 0.1, seed=8)[1] != dev
