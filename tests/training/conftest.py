"""Fixtures the export, quantize and publish tests share: a tiny trained run and its held-out pairs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from rmserve.training.options import TrainConfig
from rmserve.training.train import train
from tests.training.test_train import TINY_MODEL, write_preferences


@pytest.fixture(scope="session")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny from-scratch model trained for a few steps (two transformer towers and a bag of n-grams);
    its held-out pairs are `held_out.jsonl` beside it."""
    root = tmp_path_factory.mktemp("export")
    data = write_preferences(root / "train.jsonl", count=40)
    model = replace(TINY_MODEL, max_length=64, n_towers=2)
    trained = train(TrainConfig(data=data, out=root / "run", epochs=1, model=model, batch_size=8))
    trained.save(root / "run")
    write_preferences(root / "held_out.jsonl", count=20, seed=1)
    return root / "run"
