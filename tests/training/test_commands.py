"""The training commands' user errors (train, export, import, quantize, eval, ensemble): one line, exit 2.

Each is refused before anything is loaded or written where it can be; a Hugging Face path is never
looked up on a hub.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from rmserve.cli import build_parser
from rmserve.core.manifest import MODEL_FILE, sha256_of
from tests.hf_checkpoints import write_checkpoint
from tests.test_cli import user_error

CASES = [
    (
        ["import", "{missing}", "--name", "x"],
        "argument HF_DIR: no Hugging Face checkpoint at {missing} (no config.json or adapter_config.json)",
    ),
    (["import", "{prefs}", "--name", "x"], "argument HF_DIR: no Hugging Face checkpoint at {prefs}"),
    (["import", "{hf}", "--name", "tiny"], "{repository}/tiny/1 already exists: pick another --version"),
    (["import", "{hf}", "--name", "../x"], "argument --name: '../x' is not a model name"),
    (["import", "{hf}", "--name", "x", "--version", "0"], "argument --version: must be a whole number of at least 1"),
    (
        ["import", "{hf}", "--name", "x", "--max-length", "2"],
        "argument --max-length: must be a whole number of at least",
    ),
    (["import", "{hf}", "--name", "x", "--calibration", "{missing}"], "argument --calibration: no file at {missing}"),
    (["import", "{hf}", "--name", "x", "--nosuch"], "unrecognized arguments: --nosuch (see rmserve import --help)"),
    (["train", "{prefs}", "-o", "{run}"], "-o {run} already exists: pass a new run directory"),
    (["train", "{prefs}", "-o", "{prefs}"], "-o {prefs} already exists"),
    (["train", "{tmp}", "-o", "{new}"], "argument data: {tmp} is a directory; pass a file"),
    (["train", "{prefs}", "-o", "{new}", "--epochs", "0"], "argument --epochs: must be a whole number of at least 1"),
    (["train", "{prefs}", "-o", "{new}", "--batch-size", "0"], "argument --batch-size: must be a whole number"),
    (["train", "{prefs}", "-o", "{new}", "--learning-rate", "0"], "argument --learning-rate: must be a number above 0"),
    (["train", "{prefs}", "-o", "{new}", "--max-length", "2"], "argument --max-length: must be a whole number"),
    (
        ["train", "{prefs}", "-o", "{new}", "--d-model", "15", "--heads", "2"],
        "--d-model 15 must be a multiple of --heads 2",
    ),
    (["export", "{run}", "--held-out", "{prefs}", "--name", "tiny"], "{repository}/tiny/1 already exists"),
    (["export", "{run}", "--held-out", "{missing}", "--name", "x"], "argument --held-out: no file at {missing}"),
    (
        ["quantize", "{repository}/tiny/1", "--held-out", "{prefs}", "--name", "tiny"],
        "{repository}/tiny/1 already exists",
    ),
    (["eval", "tiny", "{prefs}", "--threads", "0"], "argument --threads: must be a whole number of at least 1"),
    (["eval", "tiny", "{prefs}", "--report", "{prefs}"], "--report {prefs} is a file; pass a directory"),
    (
        ["ensemble", "../e", "--members", "a", "b", "--calibration", "{prefs}"],
        "argument name: '../e' is not a model name",
    ),
]


@pytest.mark.parametrize(("argv", "message"), CASES, ids=[" ".join(argv) for argv, _ in CASES])
def test_a_training_command_mistake_is_one_line(
    capsys: pytest.CaptureFixture[str], tiny_repository: Path, tmp_path: Path, argv: list[str], message: str
) -> None:
    places = {
        "tmp": tmp_path,
        "repository": tiny_repository,
        "missing": tmp_path / "missing",
        "new": tmp_path / "new-run",
        "prefs": tmp_path / "prefs.jsonl",
        "hf": tmp_path / "hf",  # enough of a checkpoint to pass the argument check
        "run": tmp_path / "run",  # enough of a training run to pass the export's check
    }
    places["prefs"].write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n')
    places["hf"].mkdir()
    (places["hf"] / "config.json").write_text("{}")
    places["run"].mkdir()
    (places["run"] / "training.json").write_text("{}")
    served = sha256_of(tiny_repository / "tiny" / "1" / MODEL_FILE)
    argv = [arg.format(**places) for arg in argv]
    if argv[0] != "train":
        argv += ["--repository", str(tiny_repository)]
    assert message.format(**places) in user_error(capsys, argv)
    assert sha256_of(tiny_repository / "tiny" / "1" / MODEL_FILE) == served  # never written over
    assert not places["new"].exists()


def test_a_decoder_without_a_pad_token_says_what_to_set(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    checkpoint = write_checkpoint(tmp_path / "hf", "llama")
    for name, key in (("config.json", "pad_token_id"), ("tokenizer_config.json", "pad_token")):
        settings = json.loads((checkpoint / name).read_text())
        settings.pop(key)
        (checkpoint / name).write_text(json.dumps(settings))
    argv = ["import", str(checkpoint), "--name", "no-pad", "--repository", str(tmp_path / "repository")]
    message = user_error(capsys, argv)
    assert "neither the model config nor the tokenizer names a pad token; set pad_token_id in config.json" in message
    assert not (tmp_path / "repository" / "no-pad").exists()


def test_the_commands_never_ask_a_model_hub() -> None:
    """transformers and huggingface_hub read these when first imported, which no command has done by then."""
    build_parser()
    assert os.environ["HF_HUB_OFFLINE"] == "1"
