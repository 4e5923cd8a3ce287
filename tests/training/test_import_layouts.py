"""`rmserve import --layout`: text reaches the model byte for byte, laid out as its trainer laid it out.

Each served score is checked against transformers' forward pass on the trainer's own tokenization:
`apply_chat_template(messages)` (chat_template), `tokenizer(prompt + response + eos)` (text, TRL's
RewardTrainer on plain data), never against rmserve's own rendering.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from flask import Flask

from rmserve.core.manifest import Manifest
from rmserve.training.commands import main as cli_main
from rmserve.training.importer import CheckpointError, import_checkpoint
from rmserve.training.options import ImportConfig
from tests.hf_checkpoints import write_checkpoint

# ChatML without a default system turn or any trimming: every byte of a message reaches the model.
CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>'"
    " + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# The example: policies emit leading and trailing whitespace all the time.
PELICANS = "Why do pelicans carry so much? Their beaks are big. " * 3
PROMPT = "  Tell me about pelicans.\n"


def hf_pair(checkpoint: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    return tokenizer, AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()


def forward(model: Any, ids: list[int]) -> float:
    with torch.no_grad():
        return float(model(input_ids=torch.tensor([ids])).logits[0, 0])


def retokenized(checkpoint: Path, change: Callable[[Any], None]) -> Path:
    """The checkpoint with its tokenizer config changed (the weights and vocabulary as they were)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    change(tokenizer)
    tokenizer.save_pretrained(checkpoint)
    return checkpoint


def said_lines(stderr: str) -> list[str]:
    """What rmserve itself wrote to stderr, line by line."""
    return [line for line in re.split(r"[\r\n]", stderr) if line.startswith("rmserve")]


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("layouts") / "repo"


@pytest.fixture(scope="module")
def chatml_llama(tmp_path_factory: pytest.TempPathFactory, repository: Path) -> Path:
    """A tiny Llama reward model with a ChatML template, imported with --layout auto (its template)."""
    checkpoint = write_checkpoint(tmp_path_factory.mktemp("hf") / "llama", "llama")
    retokenized(checkpoint, lambda tokenizer: setattr(tokenizer, "chat_template", CHATML_TEMPLATE))
    import_checkpoint(ImportConfig(checkpoint=checkpoint, name="chatml", repository=repository, max_length=256))
    return checkpoint


def test_the_text_as_sent_reaches_a_chat_template_byte_for_byte(
    chatml_llama: Path, repository: Path, make_app: Callable[..., Flask]
) -> None:
    tokenizer, model = hf_pair(chatml_llama)
    messages = [{"role": "user", "content": PROMPT}, {"role": "assistant", "content": PELICANS}]
    expected = forward(model, tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])
    client = make_app(model_repository=repository, models=("chatml",)).test_client()

    by_messages = client.post("/v1/score", json={"items": [{"messages": messages}]}).get_json()
    assert by_messages["raw_scores"] == pytest.approx([expected], abs=1e-4)
    by_fields = client.post("/v1/score", json={"items": [{"prompt": PROMPT, "response": PELICANS}]}).get_json()
    assert by_fields["raw_scores"] == pytest.approx([expected], abs=1e-4)
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)  # what veRL sends
    classified = client.post("/classify", json={"input": [rendered], "use_activation": False}).get_json()
    assert classified["data"][0]["probs"] == pytest.approx(by_messages["scores"], abs=1e-4)
    prompt = tokenizer.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    rewarded = client.post("/get_reward", json={"query": [prompt + PELICANS + "<|im_end|>"], "prompts": [prompt]})
    assert rewarded.get_json()["rewards"] == pytest.approx(by_messages["scores"], abs=1e-4)

    stripped = [{"role": m["role"], "content": m["content"].strip()} for m in messages]
    other = forward(model, tokenizer.apply_chat_template(stripped, tokenize=True, return_dict=True)["input_ids"])
    assert abs(other - expected) > 1e-3  # whitespace changes the score: the test would see it stripped


@pytest.fixture(scope="module")
def text_import(chatml_llama: Path, repository: Path) -> Manifest:
    """The same checkpoint imported with --layout text, as if TRL had trained it on plain data."""
    config = ImportConfig(checkpoint=chatml_llama, name="plain", repository=repository, max_length=256, layout="text")
    return import_checkpoint(config)


def test_text_layout_scores_prompt_plus_response_plus_eos_as_trl_tokenizes_it(
    chatml_llama: Path, text_import: Manifest, repository: Path, make_app: Callable[..., Flask]
) -> None:
    manifest = text_import
    assert manifest.input_format == {"style": "text", "eos_token": "<|eot_id|>"}
    assert manifest.source is not None and manifest.source.layout == "--layout text"
    assert manifest.parity is not None and manifest.parity.tokenization_matches_transformers == 1.0
    tokenizer, model = hf_pair(chatml_llama)
    hh_prompt = "\n\nHuman: Tell me about pelicans.\n\nAssistant:"
    items = [
        (PROMPT, PELICANS),
        (hh_prompt, " " + PELICANS),  # an HH transcript stays as written, as TRL read it
        ("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", "Hello!"),  # so does any formatted prompt
        ("hi", "Hello!<|eot_id|>"),  # a response that ends with the EOS gets no second one (TRL's add_eos)
    ]
    expected = [
        forward(model, tokenizer(prompt + response.removesuffix("<|eot_id|>") + "<|eot_id|>")["input_ids"])
        for prompt, response in items
    ]
    client = make_app(model_repository=repository, models=("plain",)).test_client()
    body = {"items": [{"prompt": prompt, "response": response} for prompt, response in items]}
    assert client.post("/v1/score", json=body).get_json()["raw_scores"] == pytest.approx(expected, abs=1e-4)


def test_a_long_text_item_is_cut_keeping_its_special_tokens_and_eos(
    chatml_llama: Path, text_import: Manifest, repository: Path
) -> None:
    from tokenizers import Tokenizer

    from rmserve.core.conversation import Exchange, Turn
    from rmserve.core.formats import load_format
    from rmserve.core.tokenizer import pad_batch
    from rmserve.engine.session import OnnxScorer

    version = repository / "plain" / "1"
    backend = Tokenizer.from_file(str(version / "tokenizer.json"))
    text_format = load_format(text_import.input_format, backend, 64, text_import.tokens)
    tokenizer, model = hf_pair(chatml_llama)
    long_response = "The quick brown fox jumps over the lazy dog near the river bank. " * 40
    (encoding,) = text_format.encode([Exchange((Turn("user", PROMPT),), long_response, "x", prompt_text=PROMPT)])
    assert encoding.truncated and len(encoding.input_ids) <= 64
    assert encoding.input_ids[-1] == tokenizer.eos_token_id  # where the decoder reads the score
    assert encoding.response_tokens > 64  # the whole response's length, for the length flags
    cut = tokenizer.decode(encoding.input_ids, skip_special_tokens=False)
    assert PROMPT.endswith(cut.partition("The quick")[0])  # the end of the prompt, then the start of the response
    assert cut.endswith("river bank. <|eot_id|>")
    assert tokenizer(cut)["input_ids"] == encoding.input_ids  # the cut is a text TRL would have tokenized so
    served, _ = OnnxScorer(version / "model.onnx", 1).score_and_embed(
        *pad_batch([encoding.input_ids], text_import.tokens.pad_id)
    )
    assert float(served[0]) == pytest.approx(forward(model, encoding.input_ids), abs=1e-4)


def test_auto_guesses_in_one_line_and_the_cli_takes_a_layout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A BERT fine-tuned by TRL with RewardConfig(eos_token="[SEP]"): no chat template, an EOS in its config.
    checkpoint = retokenized(write_checkpoint(tmp_path / "bert", "bert"), lambda t: setattr(t, "eos_token", "[SEP]"))
    argv = ["import", str(checkpoint), "--repository", str(tmp_path / "repo"), "--max-length", "128"]
    capsys.readouterr()  # the checkpoint's own writing
    assert cli_main([*argv, "--name", "guessed"]) == 0
    (said,) = said_lines(capsys.readouterr().err)  # one line (the rest is transformers' progress, in tests)
    assert said.startswith("rmserve import: guessed --layout text (TRL RewardTrainer on plain data)")
    assert said.endswith("choose with --layout {text,pair,chat_template}")
    manifest = Manifest.read(tmp_path / "repo" / "guessed" / "1")
    assert manifest.input_format == {"style": "text", "eos_token": "[SEP]"}
    assert manifest.source is not None
    assert (manifest.source.layout or "").startswith("guessed --layout text")

    assert cli_main([*argv, "--name", "pair", "--layout", "pair"]) == 0
    assert not said_lines(capsys.readouterr().err)
    assert Manifest.read(tmp_path / "repo" / "pair" / "1").input_format == {"style": "pair"}

    assert cli_main([*argv, "--name", "templated", "--layout", "chat_template"]) == 2
    assert said_lines(capsys.readouterr().err) == [
        "rmserve import: --layout chat_template: the checkpoint's tokenizer config has no chat template"
    ]


def test_a_checkpoint_without_an_eos_or_template_is_guessed_a_cross_encoder(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    checkpoint = write_checkpoint(tmp_path / "deberta", "deberta")
    assert AutoTokenizer.from_pretrained(checkpoint).eos_token is None
    manifest = import_checkpoint(ImportConfig(checkpoint=checkpoint, name="d", repository=tmp_path / "repo"))
    assert manifest.input_format == {"style": "pair"}
    with pytest.raises(CheckpointError, match="no chat template"):
        import_checkpoint(
            ImportConfig(checkpoint=checkpoint, name="e", repository=tmp_path / "repo", layout="chat_template")
        )
