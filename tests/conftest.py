"""Fixtures every test file shares: a tiny model repository, settings, and apps built on them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from rmserve.app import create_app
from rmserve.config import Settings
from rmserve.engine.registry import ModelRegistry
from tests.tiny_model import CORPUS, write_ensemble, write_version, write_version_with_stats

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REPOSITORY = ROOT / "models"
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository holding one tiny model, `tiny` version 1."""
    root = tmp_path_factory.mktemp("repository")
    write_version(root / "tiny" / "1")
    return root


@pytest.fixture(scope="session")
def stats_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository holding `tiny` version 1 with training statistics, as `rmserve export` writes them.

    Its "training responses" are the sentences of the tokenizer's corpus and their halves.
    """
    root = tmp_path_factory.mktemp("stats-repository")
    responses = [half for sentence in CORPUS for half in (sentence, sentence[: len(sentence) // 2])]
    write_version_with_stats(root / "tiny" / "1", ["\n\nHuman: Hi?\n\nAssistant:"] * len(responses), responses)
    return root


@pytest.fixture(scope="session")
def ensemble_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository holding three tiny models (different weight seeds and normalizations) and `tiny-ensemble` of
    them, calibrated by `rmserve ensemble` on preference pairs made of the tokenizer's corpus."""
    root = tmp_path_factory.mktemp("ensemble-repository")
    write_ensemble(root, root.parent / "ensemble-calibration.jsonl")
    return root


EMBEDDING_WIDTH = 8


def window_responses() -> list[str]:
    """The embedding model's "training responses": every five-word window of the tokenizer's corpus."""
    words = [sentence.split() for sentence in CORPUS]
    return [" ".join(sentence[start : start + 5]) for sentence in words for start in range(len(sentence) - 4)]


@pytest.fixture(scope="session")
def embedding_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository holding `tiny` version 1 whose graph exports an embedding, with its Gaussian and statistics."""
    root = tmp_path_factory.mktemp("embedding-repository")
    responses = window_responses()
    prompts = ["\n\nHuman: Hi?\n\nAssistant:"] * len(responses)
    write_version_with_stats(root / "tiny" / "1", prompts, responses, embedding_width=EMBEDDING_WIDTH)
    return root


@pytest.fixture
def settings(tiny_repository: Path) -> Settings:
    return Settings.from_env({}, model_repository=tiny_repository)


@pytest.fixture
def make_app(settings: Settings) -> Iterator[Callable[..., Flask]]:
    """Build apps with setting overrides; their batcher threads stop after the test."""
    registries: list[ModelRegistry] = []

    def build(**overrides: Any) -> Flask:
        app_settings = settings.replace(**overrides)
        registry = ModelRegistry.load(app_settings).start()
        registries.append(registry)
        return create_app(app_settings, registry)

    yield build
    for registry in registries:
        registry.stop(timeout=5)


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--reliability-report",
        type=Path,
        metavar="JSON",
        help="merge what the reliability tests measured into this file (make reliability: docs/reliability.json)",
    )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Write the reliability measurements only when asked: a test run never changes tracked files."""
    from tests import reliability_report

    results = session.config.getoption("reliability_report")
    if results is not None:
        reliability_report.write(results)  # tests record after their assertions: only what passed
