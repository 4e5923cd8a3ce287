"""`rmserve ensemble`: writes an ensemble.json the server serves, with held-out numbers a direct computation gives."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from flask import Flask

from rmserve.cli import main
from rmserve.core.ensemble_spec import EnsembleSpec
from rmserve.training.evaluate import pairwise_accuracy
from tests.tiny_model import ENSEMBLE, ENSEMBLE_MEMBERS, write_version

MEMBERS = [name for name, *_ in ENSEMBLE_MEMBERS]
HELD_OUT = [
    {"prompt": "What is the capital of France?", "chosen": "Paris is the capital of France.", "rejected": "no"},
    {"prompt": "How do I bake bread?", "chosen": "Knead, let it rise, bake.", "rejected": "I can't help with that."},
    {"prompt": "Tell me about foxes.", "chosen": "The quick brown fox jumps.", "rejected": "Ask something else."},
    {"prompt": "Hi", "chosen": "Reward models score responses.", "rejected": "The lazy dog sleeps by the river."},
]


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    root = tmp_path / "repository"
    for name, seed, mean, std in ENSEMBLE_MEMBERS:
        write_version(root / name / "1", name=name, seed=seed, mean=mean, std=std)
    return root


def write_pairs(path: Path, pairs: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(pair) + "\n" for pair in pairs), encoding="utf-8")
    return path


def test_the_written_spec_is_served_and_its_held_out_numbers_are_a_direct_computation(
    repository: Path, tmp_path: Path, make_app: Callable[..., Flask], capsys: pytest.CaptureFixture[str]
) -> None:
    held_out = write_pairs(tmp_path / "held-out.jsonl", HELD_OUT)
    calibration = write_pairs(tmp_path / "calibration.jsonl", HELD_OUT[::-1])
    argv = ["ensemble", ENSEMBLE, "--members", *MEMBERS, "--k", "0.5", "--reward", "min"]
    argv += ["--calibration", str(calibration), "--held-out", str(held_out), "--repository", str(repository)]
    assert main(argv) == 0
    assert "ensemble summary" in capsys.readouterr().out
    spec = EnsembleSpec.read(repository / ENSEMBLE)
    assert (spec.members, spec.k, spec.reward, spec.calibration) == (MEMBERS, 0.5, "min", "calibration.jsonl")

    client = make_app(model_repository=repository).test_client()
    members = []  # [members, pairs, 2]: each member's own /v1/score answers, (chosen, rejected) per pair
    for name in MEMBERS:
        answers = [
            client.post(
                "/v1/score",
                json={"model": name, "prompt": pair["prompt"], "responses": [pair["chosen"], pair["rejected"]]},
            ).get_json()["scores"]
            for pair in HELD_OUT
        ]
        members.append(answers)
    scores = np.array(members)
    mean, std = scores.mean(axis=0), scores.std(axis=0)
    direct = {"mean": mean, "conservative": mean - 0.5 * std, "min": scores.min(axis=0)}
    evaluation = spec.evaluation
    assert (evaluation["n"], evaluation["data"]) == (len(HELD_OUT), "held-out.jsonl")
    for which, values in direct.items():
        assert evaluation[which] == pytest.approx(pairwise_accuracy(list(values)))
    for name, member_scores in zip(MEMBERS, scores, strict=True):
        assert evaluation["members"][name] == pytest.approx(pairwise_accuracy(list(member_scores)))

    served = client.post(
        "/v1/score", json={"model": ENSEMBLE, "prompt": HELD_OUT[0]["prompt"], "responses": [HELD_OUT[0]["chosen"]]}
    ).get_json()
    assert served["reward"] == "min" and served["scores"] == pytest.approx([direct["min"][0][0]])
    calibration_std = [
        np.std(
            [
                client.post("/v1/score", json={"model": name, "prompt": p["prompt"], "responses": [r]}).get_json()[
                    "scores"
                ][0]
                for name in MEMBERS
            ]
        )
        for p in HELD_OUT[::-1]
        for r in (p["chosen"], p["rejected"])
    ]
    assert spec.disagreement is not None
    assert (spec.disagreement.min, spec.disagreement.max) == pytest.approx((min(calibration_std), max(calibration_std)))


@pytest.mark.parametrize(
    ("members", "message"),
    [
        (["tiny-a", "tiny-x"], "--members: no model 'tiny-x' in"),
        (["tiny-a"], "--members: List should have at least 2 items"),
        (["tiny-a", "tiny-a"], "--members: Value error, members are not distinct"),
    ],
)
def test_members_that_are_not_models_of_the_repository_are_refused_in_one_line(
    repository: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], members: list[str], message: str
) -> None:
    calibration = write_pairs(tmp_path / "calibration.jsonl", HELD_OUT)
    argv = ["ensemble", "e", "--members", *members, "--calibration", str(calibration), "--repository", str(repository)]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"rmserve ensemble: {message}") and error.count("\n") == 1
    assert not (repository / "e").exists()


def test_an_ensemble_is_not_a_member_and_a_model_name_is_not_taken(
    repository: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    calibration = write_pairs(tmp_path / "calibration.jsonl", HELD_OUT)
    common = ["--calibration", str(calibration), "--repository", str(repository)]
    assert main(["ensemble", "first", "--members", "tiny-a", "tiny-b", *common]) == 0
    assert main(["ensemble", "second", "--members", "tiny-a", "first", *common]) == 2
    assert "'first' is itself an ensemble" in capsys.readouterr().err
    assert main(["ensemble", "tiny-c", "--members", "tiny-a", "tiny-b", *common]) == 2
    assert "is a model (it has versions)" in capsys.readouterr().err
