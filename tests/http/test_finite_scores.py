"""Every score served is a finite number: a normalization that overflows is `inference_failed`, never `null`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from rmserve.app import create_app
from rmserve.config import Settings
from rmserve.core.ensemble_spec import ENSEMBLE_FILE
from rmserve.core.manifest import MANIFEST_FILE
from rmserve.engine.registry import ModelRegistry
from tests.reliability_report import record
from tests.tiny_model import write_version

BREAD = {"prompt": "How do I bake bread?", "responses": ["Knead and bake.", "No idea."]}


def serve(repository: Path) -> tuple[FlaskClient, ModelRegistry]:
    settings = Settings(model_repository=repository)
    registry = ModelRegistry.load(settings).start()
    return create_app(settings, registry).test_client(), registry


def failures(client: FlaskClient, model: str) -> float:
    series = f'rmserve_items_failed_total{{model="{model}",reason="non_finite"}}'
    lines = client.get("/metrics").get_data(as_text=True).splitlines()
    return sum(float(line.split()[-1]) for line in lines if line.startswith(series + " "))


def test_a_score_that_normalizes_past_the_largest_float_is_inference_failed_not_null(tmp_path: Path) -> None:
    # Finite, valid numbers whose (raw - mean) / std overflows to infinity for every raw score.
    write_version(tmp_path / "overflow" / "1", name="overflow", mean=-1.7e308, std=0.1)
    client, registry = serve(tmp_path)
    try:
        response = client.post("/v1/score", json=BREAD)
        assert response.status_code == 500, response.get_json()
        error = response.get_json()["error"]
        assert error["code"] == "inference_failed" and error["field"] == "responses[0]"
        assert "not a finite number" in error["message"]
        assert failures(client, "overflow") == 2
    finally:
        registry.stop(timeout=5)
    record(
        "Bad models: a normalization that overflows",
        "a manifest whose normalization (mean -1.7e308, std 0.1) turns every raw score into infinity; POST /v1/score",
        '500 inference_failed naming responses[0], rmserve_items_failed_total{reason="non_finite"} +2; never '
        '"scores": [null] with 200',
    )


def test_an_ensemble_whose_disagreement_overflows_is_inference_failed(tmp_path: Path) -> None:
    # Each member's scores are finite (up to ~1e299), their std across members is not (its squares overflow).
    write_version(tmp_path / "huge" / "1", name="huge", seed=1, mean=0.0, std=1e-300)
    write_version(tmp_path / "plain" / "1", name="plain", seed=2)
    (tmp_path / "both").mkdir()
    (tmp_path / "both" / ENSEMBLE_FILE).write_text(json.dumps({"members": ["huge", "plain"], "reward": "mean"}))
    client, registry = serve(tmp_path)
    try:
        response = client.post("/v1/score", json={"model": "both", **BREAD})
        assert response.status_code == 500, response.get_json()
        assert response.get_json()["error"]["code"] == "inference_failed"
    finally:
        registry.stop(timeout=5)


@pytest.mark.parametrize("std", [5e-324, 1e-310, 0.0])
def test_a_subnormal_or_zero_std_is_refused_at_load(
    tmp_path: Path, std: float, caplog: pytest.LogCaptureFixture
) -> None:
    write_version(tmp_path / "tiny" / "1")
    write_version(tmp_path / "subnormal" / "1", name="subnormal")
    manifest = tmp_path / "subnormal" / "1" / MANIFEST_FILE
    written = json.loads(manifest.read_text())
    written["normalization"]["std"] = std
    manifest.write_text(json.dumps(written))
    client, registry = serve(tmp_path)
    try:
        assert client.post("/v1/score", json={"model": "subnormal", **BREAD}).status_code == 404
        assert client.get("/readyz").get_json()["skipped"] == ["subnormal"]
    finally:
        registry.stop(timeout=5)
    assert "normalization.std" in caplog.text and "must be a normal positive number" in caplog.text
