"""The shipped model (hh-harmless, a `transcript` manifest) reads served text exactly as training did."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable

import numpy as np
import pytest
from flask import Flask

from rmserve.core.formats import TranscriptFormat
from rmserve.core.tokenizer import pad_batch
from tests.conftest import DEFAULT_REPOSITORY, SHARED_DATA

DATA = SHARED_DATA / "hh-rlhf-harmless-test.jsonl.gz"


@pytest.mark.skipif(not DATA.is_file(), reason="needs ../shared/data")
def test_hh_texts_score_as_the_training_layout_byte_for_byte(make_app: Callable[..., Flask]) -> None:
    app = make_app(model_repository=DEFAULT_REPOSITORY, models=("hh-harmless",))
    client = app.test_client()
    version = app.extensions["rmserve"].registry.get("hh-harmless").version
    assert isinstance(version.format, TranscriptFormat)
    with gzip.open(DATA, "rt", encoding="utf-8") as lines:
        # Lines 1840-1859 include a turn with odd leading spaces (line 1850), which must survive as written.
        texts = [json.loads(line)["chosen"] for number, line in enumerate(lines, 1) if 1840 <= number < 1860]
    split = [version.format.transcript.split_transcript(text) for text in texts]
    # Training read a transcript's prompt up to its last `Assistant:` and the response stripped (the model's layout).
    trained = [(prompt.removesuffix(" "), response.strip()) for prompt, response in split]
    encodings = version.format.encoder.encode([prompt for prompt, _ in trained], [response for _, response in trained])
    expected = version.scorer(*pad_batch([e.input_ids for e in encodings], version.manifest.tokens.pad_id))

    full_texts = client.post("/get_reward", json={"query": texts}).get_json()["extra_logs"]["rm_raw_score"]
    np.testing.assert_allclose(full_texts, expected, atol=1e-5)
    items = [{"prompt": prompt, "response": response} for prompt, response in split]
    pairs = client.post("/v1/score", json={"items": items}).get_json()["raw_scores"]
    np.testing.assert_allclose(pairs, expected, atol=1e-5)
