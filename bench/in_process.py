"""What the in-process benchmarks share: the committed repository, the data, a registry that stops itself."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from bench.live_server import ROOT
from rmserve.config import Settings
from rmserve.engine.registry import ModelRegistry

REPOSITORY = ROOT / "models"
DATA = ROOT.parent / "shared" / "data" / "hh-rlhf-harmless-test.jsonl.gz"
GROUP = 8  # responses per request, as GRPO sends a group
DEADLINE_S = 300.0  # per request: a benchmark waits for its scores rather than failing on a busy machine


@contextmanager
def serving(settings: Settings) -> Iterator[ModelRegistry]:
    """The repository's models (and ensembles) as `settings` selects them, batchers running until the block ends."""
    registry = ModelRegistry.load(settings).start()
    try:
        yield registry
    finally:
        registry.stop(5)
