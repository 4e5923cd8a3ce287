"""The manifest's typed records read every committed manifest and write it back unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rmserve.core.manifest import MANIFEST_FILE, Manifest, Parity, TrainingRecord
from tests.conftest import DEFAULT_REPOSITORY

COMMITTED = sorted(DEFAULT_REPOSITORY.glob(f"*/*/{MANIFEST_FILE}"))


@pytest.mark.parametrize("path", COMMITTED, ids=lambda path: path.parent.parent.name)
def test_committed_manifests_read_into_typed_records_and_write_back_unchanged(path: Path, tmp_path: Path) -> None:
    manifest = Manifest.read(path.parent)
    assert isinstance(manifest.parity, Parity) and isinstance(manifest.training, TrainingRecord)
    assert manifest.parity.max_abs_diff is not None and manifest.training.data.endswith(".jsonl.gz")
    assert manifest.training.model_extra and "dev_accuracy" in manifest.training.model_extra  # the run's own results
    manifest.write(tmp_path)
    assert json.loads((tmp_path / MANIFEST_FILE).read_text()) == json.loads(path.read_text())


def test_measurements_a_publisher_did_not_take_are_left_out_not_null() -> None:
    record = Parity(data="held_out.jsonl", max_abs_diff=1e-6, ranking_agreement=1.0).model_dump(mode="json")
    assert record == {"data": "held_out.jsonl", "max_abs_diff": 1e-6, "ranking_agreement": 1.0}
    assert TrainingRecord(data="train.jsonl", dev_seed=1, seed=0).split_seed == 1
    assert TrainingRecord(data="train.jsonl", seed=3).split_seed == 3  # a run from before --dev-seed
