"""`POST /v1/rank` agrees with `/v1/score` on the same texts: ordering, z-scores, pairwise preferences."""

from __future__ import annotations

import math

import numpy as np
import pytest
from flask.testing import FlaskClient

PROMPT = "How do I bake bread?"
RESPONSES = [
    "Mix flour, water, yeast and salt, knead, let it rise, bake at 230C.",
    "I'm sorry, I can't help with that.",
    "The quick brown fox jumps over the lazy dog.",
    "Reward models score responses.",
    "Paris is the capital of France.",
]


def scored(client: FlaskClient, prompt: str, responses: list[str]) -> dict:
    answer = client.post("/v1/score", json={"prompt": prompt, "responses": responses})
    assert answer.status_code == 200, answer.json
    return answer.get_json()


def ranked(client: FlaskClient, prompt: str, responses: list[str]) -> dict:
    answer = client.post("/v1/rank", json={"prompt": prompt, "responses": responses})
    assert answer.status_code == 200, answer.json
    return answer.get_json()


def test_rank_orders_responses_by_their_score(client):
    score, rank = scored(client, PROMPT, RESPONSES), ranked(client, PROMPT, RESPONSES)
    assert rank["scores"] == pytest.approx(score["scores"])
    assert rank["raw_scores"] == pytest.approx(score["raw_scores"])
    assert sorted(rank["ranking"]) == list(range(len(RESPONSES)))
    ranked_scores = [score["scores"][index] for index in rank["ranking"]]
    assert ranked_scores == sorted(score["scores"], reverse=True)


def test_z_scores_are_standardized_within_the_group(client):
    score, rank = scored(client, PROMPT, RESPONSES), ranked(client, PROMPT, RESPONSES)
    scores = np.array(score["scores"])
    assert rank["z_scores"] == pytest.approx(((scores - scores.mean()) / scores.std()).tolist(), abs=1e-6)
    assert np.mean(rank["z_scores"]) == pytest.approx(0.0, abs=1e-9)
    assert np.std(rank["z_scores"]) == pytest.approx(1.0)


def test_pairwise_is_the_bradley_terry_preference_of_raw_scores(client):
    raw = scored(client, PROMPT, RESPONSES)["raw_scores"]
    pairwise = np.array(ranked(client, PROMPT, RESPONSES)["pairwise"])
    count = len(RESPONSES)
    assert pairwise.shape == (count, count)
    for i in range(count):
        for j in range(count):
            assert pairwise[i, j] == pytest.approx(1.0 / (1.0 + math.exp(-(raw[i] - raw[j]))))
    assert np.diag(pairwise) == pytest.approx([0.5] * count)
    assert pairwise + pairwise.T == pytest.approx(np.ones((count, count)))


def test_the_top_ranked_response_is_preferred_over_every_other(client):
    rank = ranked(client, PROMPT, RESPONSES)
    best = rank["ranking"][0]
    assert all(rank["pairwise"][best][other] >= 0.5 for other in range(len(RESPONSES)))


def test_identical_responses_tie(client):
    rank = ranked(client, PROMPT, ["Same answer."] * 3)
    assert rank["z_scores"] == [0.0, 0.0, 0.0]
    assert rank["pairwise"] == [[0.5] * 3] * 3
    assert rank["ranking"] == [0, 1, 2]  # ties keep request order


def test_a_group_of_one(client):
    rank = ranked(client, PROMPT, ["Only answer."])
    assert (rank["ranking"], rank["z_scores"], rank["pairwise"]) == ([0], [0.0], [[0.5]])


def test_rank_carries_the_score_fields(client):
    rank = ranked(client, PROMPT, RESPONSES[:2])
    assert rank["model"] == "tiny" and rank["version"] == 1
    assert len(rank["tokens"]) == len(rank["truncated"]) == 2
    assert rank["request_id"]


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"prompt": PROMPT, "responses": []}, 422, "responses"),
        ({"responses": ["a"]}, 422, "prompt"),
        ({"prompt": PROMPT, "responses": ["a", 3]}, 422, "responses[1]"),
        ({"prompt": PROMPT, "responses": ["a"], "respones": []}, 422, "respones"),
        ({"model": "nope", "prompt": PROMPT, "responses": ["a"]}, 404, "model"),
    ],
)
def test_rank_errors_name_the_field(client, body, status, field):
    answer = client.post("/v1/rank", json=body)
    assert answer.status_code == status
    assert answer.json["error"]["field"] == field


def test_a_group_over_the_item_limit_is_refused(make_app):
    client = make_app(max_items=3).test_client()
    answer = client.post("/v1/rank", json={"prompt": PROMPT, "responses": ["a"] * 4})
    assert answer.status_code == 413
    assert answer.json["error"]["field"] == "responses"
