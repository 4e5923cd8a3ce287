"""`make model` can run again: each run rebuilds every committed model and replaces the one before it.

The target runs here as written, at a tiny size (synthetic preferences, a tiny checkpoint as the MiniLM
base, tiny training flags), into a scratch repository: twice, the way a maintainer reruns it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from rmserve.config import Settings
from rmserve.core.ensemble_spec import ENSEMBLE_FILE
from rmserve.core.manifest import Manifest
from rmserve.engine.registry import ModelRegistry
from tests.conftest import ROOT
from tests.hf_checkpoints import write_checkpoint
from tests.training.test_train import write_preferences

VERSIONS = ("hh-harmless", "hh-harmless-int8", "hh-harmless-seed1", "hh-harmless-minilm")
ENSEMBLE = "hh-harmless-ensemble"
TINY_TRAINING = "--epochs 1 --vocab-size 300 --d-model 16 --layers 1 --heads 2 --max-length 64 --hash-buckets 1021"
MAKE_TIMEOUT_S = 900


def make_model(tmp_path: Path, data: Path, base: Path) -> tuple[int, str]:
    """`make model` at a tiny size into `tmp_path`: its exit status and stderr."""
    command = [
        "make",
        "--no-print-directory",
        "-o",
        ".venv/.installed-dev",  # the environment is this one: never reinstall it from here
        "model",
        f"MODEL_DATA={data}",
        "MODEL_TRAIN_LINES=1-60",
        "MODEL_HELD_OUT_LINES=61-90",
        f"MODEL_TRAIN_FLAGS={TINY_TRAINING}",
        f"MINILM_BASE={base}",
        f"MODEL_REPOSITORY={tmp_path / 'models'}",
        f"RUNS={tmp_path / 'runs'}",
    ]
    # Its own process group, so a run past the bound is killed with every step it started.
    with subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True
    ) as process:
        try:
            _, stderr = process.communicate(timeout=MAKE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            raise
    return process.returncode, stderr


@pytest.mark.slow
@pytest.mark.timeout(2 * MAKE_TIMEOUT_S + 60)
@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_model_twice_rebuilds_and_replaces_every_model(tmp_path: Path) -> None:
    data = write_preferences(tmp_path / "preferences.jsonl", count=90)
    base = write_checkpoint(tmp_path / "base", "bert")
    repository = tmp_path / "models"

    status, stderr = make_model(tmp_path, data, base)
    assert status == 0, stderr[-3000:]
    first_made = {name: Manifest.read(repository / name / "1").created for name in VERSIONS}

    status, stderr = make_model(tmp_path, data, base)  # without the scratch build: "-o ... already exists"
    assert status == 0, stderr[-3000:]
    for name in VERSIONS:  # one version each, the second run's; the first run's kept aside to compare
        assert sorted(path.name for path in (repository / name).iterdir()) == ["1"]
        assert Manifest.read(repository / name / "1").created > first_made[name]
        replaced = tmp_path / "runs" / "model-build" / "replaced" / name / "1"
        assert Manifest.read(replaced).created == first_made[name]
    assert [path.name for path in (repository / ENSEMBLE).iterdir()] == [ENSEMBLE_FILE]
    # What the second run published is a repository the server loads whole: hashes, members and all.
    registry = ModelRegistry.load(Settings.from_env({}, model_repository=repository))
    try:
        assert sorted(registry.models) == sorted([*VERSIONS, ENSEMBLE]) and registry.skipped == []
    finally:
        registry.stop(timeout=5)
