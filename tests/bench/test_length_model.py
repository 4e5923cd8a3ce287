"""The length-loving model of the drift scenario: what its manifest claims holds, and it pays for length."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from flask import Flask
from tokenizers import Tokenizer

from bench.drift import DATA, FILLER, PROMPT_LINES
from bench.length_model import LENGTH_WEIGHT, NAME, PRIOR_TOKENS, SEED, write_length_loving_version
from rmserve.core.manifest import MODEL_FILE, TOKENIZER_FILE, Manifest, TrainingRecord
from rmserve.core.repository import verify_version
from rmserve.core.tokenizer import pad_batch
from rmserve.engine.session import OnnxScorer
from rmserve.training.stats import add_training_stats

pytestmark = pytest.mark.skipif(not DATA.exists(), reason="needs ../shared/data")
PROMPT = "\n\nHuman: How do I keep basil alive indoors?\n\nAssistant:"
ANSWER = "Give it a sunny window and water it when the top of the soil is dry."


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("length-loving")
    write_length_loving_version(root, DATA, PROMPT_LINES)
    return root


def test_manifest_says_it_is_untrained_and_its_statistics_reproduce(repository: Path) -> None:
    version = repository / NAME / "1"
    manifest = Manifest.read(version)
    assert "not trained" in manifest.architecture["type"] and manifest.training == TrainingRecord.model_validate(
        {"data": str(DATA), "lines": "1-1800", "trained": False}
    )
    assert manifest.evaluation.pairwise_accuracy is None
    stats = manifest.training_stats
    assert stats is not None and stats.data == f"{DATA.name} lines 1-1800" and stats.responses == 2 * 1800
    # The project's own tool rescoring the lines the manifest names finds the same normalization and statistics.
    assert add_training_stats(version).training_stats == stats


def test_graph_computes_the_formula_its_manifest_states(repository: Path) -> None:
    version = verify_version(repository / NAME / "1")
    responses = ["", "Yes.", ANSWER, f"{ANSWER} {FILLER[0]}"]
    encodings = version.format.encode_texts([PROMPT] * len(responses), responses)
    raw = OnnxScorer(version.model_path, 1)(*pad_batch([encoding.input_ids for encoding in encodings], 0))
    tokenizer = Tokenizer.from_file(str(version.directory / TOKENIZER_FILE))
    weights = np.random.default_rng(SEED).normal(0.0, 1.0, size=tokenizer.get_vocab_size())
    expected = []
    for response in responses:
        ids = tokenizer.encode(response, add_special_tokens=False).ids
        expected.append(LENGTH_WEIGHT * len(ids) + weights[ids].sum() / (len(ids) + PRIOR_TOKENS))
    assert raw == pytest.approx(expected, abs=1e-5)
    assert (version.directory / MODEL_FILE).stat().st_size < 200_000


def test_padding_an_answer_raises_its_score_out_of_the_training_range(
    make_app: Callable[..., Flask], repository: Path
) -> None:
    client = make_app(model_repository=repository).test_client()
    padded = " ".join([ANSWER, *FILLER * 12])
    answer = client.post("/v1/score", json={"prompt": PROMPT, "responses": [ANSWER, padded]}).get_json()
    plain, gamed = answer["scores"]
    assert gamed > plain + 2  # in training standard deviations
    assert answer["flags"] == [[], ["score_above_training_range", "length_outside_training"]]
