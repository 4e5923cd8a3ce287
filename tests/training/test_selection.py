"""Choosing an ensemble on the members' shared dev split: numbers a direct computation gives, refusals, bootstrap."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from flask import Flask

from rmserve.core.manifest import Manifest, TrainingRecord
from rmserve.training.data import read_comparisons, split_dev
from rmserve.training.ensemble_build import load_member
from rmserve.training.selection import dev_outcomes, main, paired_bootstrap
from tests.tiny_model import ENSEMBLE_MEMBERS, calibration_pairs, write_version

MEMBERS = [name for name, *_ in ENSEMBLE_MEMBERS]
DEV_FRACTION = 0.5


def record_training(directory: Path, data: Path, dev_seed: int) -> None:
    """What `rmserve train` records of the split, as a member's manifest carries it."""
    manifest = Manifest.read(directory)
    training = TrainingRecord(data=str(data), seed=3, dev_seed=dev_seed, dev_fraction=DEV_FRACTION)
    manifest.model_copy(update={"training": training}).write(directory)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "prefs.jsonl"
    path.write_text("".join(json.dumps(pair) + "\n" for pair in calibration_pairs()), encoding="utf-8")
    return path


@pytest.fixture
def repository(tmp_path: Path, data: Path) -> Path:
    root = tmp_path / "repository"
    for name, seed, mean, std in ENSEMBLE_MEMBERS:
        write_version(root / name / "1", name=name, seed=seed, mean=mean, std=std)
        record_training(root / name / "1", data, dev_seed=7)
    return root


def test_dev_numbers_are_the_members_own_scores_on_the_shared_dev_pairs(
    repository: Path, data: Path, make_app: Callable[..., Flask]
) -> None:
    dev = split_dev(read_comparisons(data), DEV_FRACTION, 7)[1]
    client = make_app(model_repository=repository).test_client()
    served = np.array(  # [members, dev pairs, (chosen, rejected)]: each member's own /v1/score answers
        [
            [
                client.post(
                    "/v1/score", json={"model": name, "prompt": c.prompt_text, "responses": list(c.responses)}
                ).get_json()["scores"]
                for c in dev
            ]
            for name in MEMBERS
        ]
    )
    outcomes = dev_outcomes([load_member(repository, name) for name in MEMBERS])

    assert len(outcomes[MEMBERS[0]]) == len(dev) == round(len(calibration_pairs()) * DEV_FRACTION)
    for index, name in enumerate(MEMBERS):
        np.testing.assert_array_equal(outcomes[name], served[index, :, 0] > served[index, :, 1])
    mean = served.mean(axis=0)
    np.testing.assert_array_equal(outcomes[" + ".join(MEMBERS) + ": mean"], mean[:, 0] > mean[:, 1])
    conservative = mean - 2.0 * served.std(axis=0)
    assert np.array_equal(outcomes[" + ".join(MEMBERS) + ": conservative k=2"], conservative[:, 0] > conservative[:, 1])
    worst = served[:2].min(axis=0)
    np.testing.assert_array_equal(outcomes[" + ".join(MEMBERS[:2]) + ": min"], worst[:, 0] > worst[:, 1])


def test_members_with_different_dev_splits_are_refused_naming_them(
    repository: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    record_training(repository / MEMBERS[1] / "1", data, dev_seed=8)
    assert main(["--members", *MEMBERS, "--repository", str(repository)]) == 2
    error = capsys.readouterr().err
    assert "do not share one dev split" in error and f"{MEMBERS[1]}: " in error and error.count("\n") == 1


def test_held_out_table_has_every_member_and_reward_beside_the_bag_of_words(
    repository: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--members", *MEMBERS, "--repository", str(repository), "--held-out", str(data), "--k", "0.5"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert f"pairwise accuracy on {len(calibration_pairs())} held-out pairs, k=0.5" in lines[1]
    labels = [line.split("  ")[0] for line in lines[3:]]
    assert labels == ["bag of words (TF-IDF + logistic regression)", *MEMBERS, "mean", "conservative", "min"]


def test_paired_bootstrap_brackets_the_difference_and_is_zero_for_the_same_scorer() -> None:
    rng = np.random.default_rng(1)
    baseline = rng.integers(0, 2, 400).astype(float)
    assert paired_bootstrap(baseline, baseline) == (0.0, 0.0)
    assert paired_bootstrap(np.ones(400), np.zeros(400)) == (1.0, 1.0)
    better = np.where(rng.random(400) < 0.2, 1.0, baseline)  # right on a fifth more of the pairs
    low, high = paired_bootstrap(better, baseline)
    assert low < better.mean() - baseline.mean() < high and low > 0
