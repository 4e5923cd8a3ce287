"""Each model runs in its own padded-token budget: the operator's `RMSERVE_MAX_BATCH_TOKENS` for every model,
else the one its manifest records as measured best for it (MiniLM's 512), else the server's default."""

from __future__ import annotations

from pathlib import Path

import pytest

from rmserve.config import DEFAULT_BATCH_TOKENS, Settings
from rmserve.core.manifest import Manifest, Serving
from rmserve.engine.served_model import ServedModel
from rmserve.engine.version import load_version
from tests.tiny_model import write_version

MEASURED = 512


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """`plain` (its manifest measured no budget) and `measured` (its manifest records MEASURED)."""
    root = tmp_path_factory.mktemp("budgets")
    write_version(root / "plain" / "1", name="plain")
    manifest = write_version(root / "measured" / "1", name="measured")
    manifest.model_copy(update={"serving": Serving(max_batch_tokens=MEASURED)}).write(root / "measured" / "1")
    return {"plain": root / "plain" / "1", "measured": root / "measured" / "1"}


def budget(version_dir: Path, settings: Settings) -> int:
    served = ServedModel(load_version(version_dir, 1), settings)
    assert served.metadata().max_batch_tokens == served.batcher.max_batch_tokens  # what /v1/models shows
    return served.batcher.max_batch_tokens


def test_a_model_runs_in_the_budget_its_manifest_measured(versions: dict[str, Path]) -> None:
    assert Manifest.read(versions["measured"]).batch_tokens == MEASURED
    assert budget(versions["measured"], Settings()) == MEASURED
    assert budget(versions["plain"], Settings()) == DEFAULT_BATCH_TOKENS


def test_the_operators_budget_holds_for_every_model(versions: dict[str, Path]) -> None:
    settings = Settings.from_env({"RMSERVE_MAX_BATCH_TOKENS": "2048"})
    assert budget(versions["measured"], settings) == budget(versions["plain"], settings) == 2048


def test_a_measured_budget_never_exceeds_what_can_queue(versions: dict[str, Path]) -> None:
    settings = Settings.from_env({"RMSERVE_MAX_QUEUE_TOKENS": "300"})
    assert budget(versions["measured"], settings) == budget(versions["plain"], settings) == 300


def test_a_manifest_budget_must_be_positive(versions: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="max_batch_tokens"):
        Manifest.model_validate({**Manifest.read(versions["plain"]).model_dump(), "serving": {"max_batch_tokens": 0}})


def test_the_committed_minilm_records_its_measured_budget() -> None:
    """The benchmarks page's side-by-side runs measured 512 best for it (1.11-1.15x the items/s of 1,024)."""
    manifest = Manifest.read(Path(__file__).parents[2] / "models" / "hh-harmless-minilm" / "1")
    assert manifest.batch_tokens == MEASURED
