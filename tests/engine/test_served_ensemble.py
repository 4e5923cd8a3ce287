"""Ensembles served like a model (README "Ensembles"): members' own answers combined, the reward by URL,
the `high_disagreement` flag, members that fail, and the repository rules for ensemble entries."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import REGISTRY
from tokenizers import Tokenizer

from bench.live_server import wait_until
from rmserve.config import Settings
from rmserve.core.ensemble_spec import ENSEMBLE_FILE, EnsembleSpec
from rmserve.core.manifest import MODEL_FILE, TOKENIZER_FILE, Manifest
from rmserve.core.repository import InvalidModel
from rmserve.engine.registry import ModelRegistry
from rmserve.http.openapi import openapi_path
from tests.tiny_model import (
    CORPUS,
    ENSEMBLE,
    ENSEMBLE_MEMBERS,
    calibration_pairs,
    mean_weight_graph,
    reseal,
    token_weights,
    write_ensemble,
    write_slow_version,
)

MEMBERS = [name for name, *_ in ENSEMBLE_MEMBERS]
BREAD = {
    "prompt": "How do I bake bread?",
    "responses": ["Mix flour, water, yeast and salt, knead, let it rise, bake at 230C.", "no", "Knead and bake."],
}
HH_TEXT = "\n\nHuman: How do I bake bread?\n\nAssistant: Knead and bake."


@pytest.fixture
def ensemble_app(make_app: Callable[..., Flask], ensemble_repository: Path) -> Flask:
    return make_app(model_repository=ensemble_repository)


@pytest.fixture
def client(ensemble_app: Flask) -> FlaskClient:
    return ensemble_app.test_client()


def members_scores(client: FlaskClient, body: dict) -> np.ndarray:
    """Each member's own /v1/score answer for the same body: [members, items]."""
    return np.array([client.post("/v1/score", json=body | {"model": name}).get_json()["scores"] for name in MEMBERS])


def test_score_carries_mean_std_conservative_min_of_the_members_own_answers(client: FlaskClient) -> None:
    body = client.post("/v1/score", json=BREAD | {"model": ENSEMBLE}).get_json()
    members = members_scores(client, BREAD)
    mean, std = members.mean(axis=0), members.std(axis=0)
    # float32 sums differ in the last bit with how items share a batch
    assert_close = functools.partial(np.testing.assert_allclose, rtol=1e-6, atol=1e-7)
    assert_close(body["mean"], mean)
    assert_close(body["std"], std)
    assert_close(body["conservative"], mean - 1.0 * std)  # k = 1
    assert_close(body["min"], members.min(axis=0))
    assert list(body["members"]) == MEMBERS
    assert_close([body["members"][name] for name in MEMBERS], members)
    assert body["reward"] == "conservative" and body["scores"] == body["conservative"]
    assert body["version"] is None and body["model"] == ENSEMBLE
    assert body["flags"] == [[], [], []]


def test_a_single_models_answer_carries_no_ensemble_fields(client: FlaskClient) -> None:
    body = client.post("/v1/score", json=BREAD | {"model": "tiny-a"}).get_json()
    assert not {"mean", "std", "conservative", "min", "members", "reward"} & set(body)


def test_rank_ranks_by_the_reward(client: FlaskClient) -> None:
    body = client.post("/v1/rank?reward=min", json=BREAD | {"model": ENSEMBLE}).get_json()
    assert body["scores"] == body["min"]
    assert body["ranking"] == sorted(range(3), key=lambda index: -body["min"][index])


def test_single_number_protocols_return_the_reward_and_honour_it_in_the_url(client: FlaskClient) -> None:
    combined = client.post(
        "/v1/score", json={"model": ENSEMBLE, "prompt": "How do I bake bread?", "responses": ["Knead and bake."]}
    ).get_json()
    for reward in ("mean", "conservative", "min"):
        suffix = "" if reward == "conservative" else f"&reward={reward}"  # conservative is the ensemble's default
        expected = pytest.approx(combined[reward][0], rel=1e-6)  # /v2 answers float32
        answer = client.post(f"/get_reward?model={ENSEMBLE}{suffix}", json={"query": [HH_TEXT]}).get_json()
        assert answer["rewards"] == [expected] and answer["scores"] == [expected]
        query = "" if not suffix else f"?{suffix[1:]}"
        data = client.post(
            f"/classify{query}", json={"model": ENSEMBLE, "input": HH_TEXT, "use_activation": False}
        ).get_json()["data"]
        assert data[-1]["probs"][-1] == expected
        infer = {"inputs": [{"name": "sentences", "shape": [1], "datatype": "BYTES", "data": [HH_TEXT]}]}
        outputs = client.post(f"/v2/models/{ENSEMBLE}/infer{query}", json=infer).get_json()["outputs"]
        assert outputs[0]["name"] == "rewards" and outputs[0]["data"] == [expected]


def test_openrlhf_logs_the_combinations_and_the_flag_columns(client: FlaskClient) -> None:
    logs = client.post(f"/get_reward?model={ENSEMBLE}", json={"query": [HH_TEXT]}).get_json()["extra_logs"]
    assert {"rm_mean", "rm_std", "rm_conservative", "rm_min", "rm_high_disagreement", "rm_truncated"} <= set(logs)
    assert logs["rm_conservative"] == pytest.approx([logs["rm_mean"][0] - logs["rm_std"][0]])


@pytest.mark.parametrize(
    ("url", "model", "message"),
    [
        ("/get_reward?reward=median", ENSEMBLE, "must be one of mean, conservative, min, got 'median'"),
        ("/get_reward?reward=mean", "tiny-a", "'tiny-a' is a single model, not an ensemble"),
    ],
)
def test_a_bad_reward_is_a_422_naming_it(client: FlaskClient, url: str, model: str, message: str) -> None:
    response = client.post(f"{url}&model={model}", json={"query": [HH_TEXT]})
    error = response.get_json()["error"]
    assert (response.status_code, error["code"], error["field"]) == (422, "invalid_field", "reward")
    assert message in error["message"]
    response = client.post("/v1/score?reward=worst", json=BREAD | {"model": ENSEMBLE})
    assert (response.status_code, response.get_json()["error"]["field"]) == (422, "reward")


def test_models_describe_the_ensemble(client: FlaskClient) -> None:
    cards = {card["name"]: card for card in client.get("/v1/models").get_json()["data"]}
    assert sorted(cards) == sorted([*MEMBERS, ENSEMBLE])  # members stay addressable under their own names
    card = client.get(f"/v1/models/{ENSEMBLE}").get_json()
    assert card == cards[ENSEMBLE]
    assert card["ensemble"]["members"] == dict.fromkeys(MEMBERS, 1)
    assert (card["ensemble"]["k"], card["ensemble"]["reward"], card["version"]) == (1.0, "conservative", None)
    assert card["ensemble"]["disagreement"]["p99"] > 0
    assert client.get("/v1/models/tiny-a").get_json()["ensemble"] is None
    metadata = client.get(f"/v2/models/{ENSEMBLE}").get_json()
    assert metadata["platform"] == "ensemble" and metadata["parameters"]["members"] == MEMBERS
    assert client.get("/v1/models/nope").status_code == 404


def distinct_token_text(repository: Path) -> str:
    """A response made of the corpus word whose token the members weigh most differently (normalized)."""
    tokenizer = Tokenizer.from_file(str(repository / "tiny-a" / "1" / TOKENIZER_FILE))
    weights = np.stack(
        [(token_weights(tokenizer.get_vocab_size(), seed) - mean) / std for _, seed, mean, std in ENSEMBLE_MEMBERS]
    )  # [members, vocab]
    words = {word.strip(".,?;:") for sentence in CORPUS for word in sentence.split()}
    single = {word: tokenizer.encode(" " + word).ids for word in words}
    word = max((w for w, ids in single.items() if len(ids) == 1), key=lambda w: weights[:, single[w][0]].std())
    return " ".join([word] * 40)


def test_high_disagreement_fires_on_a_made_up_disagreement_and_not_on_calibration_like_text(
    client: FlaskClient, ensemble_repository: Path
) -> None:
    disagreed = distinct_token_text(ensemble_repository)
    body = client.post("/v1/score", json={"model": ENSEMBLE, "prompt": "Hi", "responses": [disagreed]}).get_json()
    spec = EnsembleSpec.read(ensemble_repository / ENSEMBLE)
    assert spec.disagreement is not None and body["std"][0] > spec.disagreement.p99
    assert body["flags"] == [["high_disagreement"]]
    pairs = calibration_pairs()
    items = [{"prompt": pair["prompt"], "response": pair[side]} for pair in pairs for side in ("chosen", "rejected")]
    flags = client.post("/v1/score", json={"model": ENSEMBLE, "items": items}).get_json()["flags"]
    flagged = {
        item["response"] for item, item_flags in zip(items, flags, strict=True) if "high_disagreement" in item_flags
    }
    # The cut is the p99 of these very responses (15 distinct, each twice): only the most disagreed-on one is above.
    assert len(flagged) <= 1


def test_without_disagreement_quantiles_there_is_no_high_disagreement_flag(
    make_app: Callable[..., Flask], tmp_path: Path
) -> None:
    write_ensemble(tmp_path, tmp_path.parent / f"{tmp_path.name}-calibration.jsonl")
    spec = EnsembleSpec.read(tmp_path / ENSEMBLE)
    spec.model_copy(update={"disagreement": None}).write(tmp_path / ENSEMBLE)
    client = make_app(model_repository=tmp_path).test_client()
    body = client.post("/v1/score", json={"model": ENSEMBLE, "prompt": "Hi", "responses": ["Hi there"]}).get_json()
    assert "high_disagreement" not in client.get(f"/v1/models/{ENSEMBLE}/stats").get_json()["flags_checked"]
    assert body["flags"] == [[]]


def refused(entry: str, reason: str) -> float | None:
    return REGISTRY.get_sample_value("rmserve_repository_refused", {"entry": entry, "reason": reason})


def write_spec(repository: Path, name: str, members: list[str]) -> None:
    (repository / name).mkdir(parents=True)
    EnsembleSpec(members=members).write(repository / name)


def test_an_ensemble_with_a_missing_member_is_skipped_and_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, make_app: Callable[..., Flask]
) -> None:
    write_ensemble(tmp_path, tmp_path.parent / f"{tmp_path.name}-calibration.jsonl")
    write_spec(tmp_path, "gone-member", ["tiny-a", "tiny-gone"])
    write_spec(tmp_path, "nested", ["tiny-a", ENSEMBLE])
    with caplog.at_level(logging.ERROR):
        client = make_app(model_repository=tmp_path).test_client()
    ready = client.get("/readyz").get_json()
    assert ready["skipped"] == ["gone-member", "nested"] and ENSEMBLE in ready["models"]
    assert "member 'tiny-gone' is not in the repository" in caplog.text
    assert f"member '{ENSEMBLE}' is itself an ensemble" in caplog.text
    assert refused("gone-member", "invalid_ensemble") == 1 and refused("nested", "invalid_ensemble") == 1


def test_an_ensemble_named_in_rmserve_models_loads_its_members_or_stops_start_up(tmp_path: Path) -> None:
    write_ensemble(tmp_path, tmp_path.parent / f"{tmp_path.name}-calibration.jsonl")
    settings = Settings.from_env({}, model_repository=tmp_path, models=(ENSEMBLE,))
    registry = ModelRegistry.load(settings)
    assert list(registry.models) == [ENSEMBLE, *MEMBERS] and registry.default == ENSEMBLE
    write_spec(tmp_path, "gone-member", ["tiny-a", "tiny-gone"])
    with pytest.raises(InvalidModel, match=r"tiny-gone: no such model directory \(a member of ensemble 'gone-member'"):
        ModelRegistry.load(settings.replace(models=("gone-member",)))
    (tmp_path / "tiny-b" / "1" / MODEL_FILE).write_bytes(b"not a graph")
    with pytest.raises(InvalidModel, match="named in RMSERVE_MODELS, so the server does not start"):
        ModelRegistry.load(settings)


def test_the_default_model_may_be_an_ensemble(make_app: Callable[..., Flask], ensemble_repository: Path) -> None:
    client = make_app(model_repository=ensemble_repository, default_model=ENSEMBLE).test_client()
    assert "conservative" in client.post("/v1/score", json=BREAD).get_json()


def poison(directory: Path, text: str) -> None:
    """Make a member's graph return NaN for the tokens of `text` (and only those): its item fails."""
    manifest = Manifest.read(directory)
    tokenizer = Tokenizer.from_file(str(directory / TOKENIZER_FILE))
    weights = token_weights(tokenizer.get_vocab_size(), int(manifest.architecture["seed"]))
    weights[tokenizer.encode(text, add_special_tokens=False).ids] = np.nan
    onnx.save(mean_weight_graph(weights), str(directory / MODEL_FILE))
    reseal(directory, manifest)


def test_a_failing_member_fails_the_request_and_cancels_what_the_others_have_queued(
    tmp_path: Path, make_app: Callable[..., Flask]
) -> None:
    write_ensemble(tmp_path, tmp_path.parent / f"{tmp_path.name}-calibration.jsonl")
    poison(tmp_path / "tiny-a" / "1", "%")
    write_slow_version(tmp_path / "slow-member" / "1", "slow-member", layers=60, width=256)
    write_spec(tmp_path, "fragile", ["tiny-a", "slow-member"])
    client = make_app(model_repository=tmp_path, executors=1, max_batch_size=1).test_client()
    responses = ["Knead and bake."] * 30 + ["%"]
    response = client.post("/v1/score", json={"model": "fragile", "prompt": "Hi", "responses": responses})
    assert (response.status_code, response.get_json()["error"]["code"]) == (500, "inference_failed")

    def slow_items(reason: str) -> float:
        return (
            REGISTRY.get_sample_value("rmserve_items_failed_total", {"model": "slow-member", "reason": reason}) or 0.0
        )

    wait_until(lambda: slow_items("cancelled") > 0, 30, "the slow member to drop the cancelled items")
    scored = REGISTRY.get_sample_value("rmserve_items_scored_total", {"model": "slow-member"}) or 0.0
    assert scored + slow_items("cancelled") <= 31 and scored < 31  # the rest were never scored
    ok = client.post("/v1/score", json={"model": "fragile", "prompt": "Hi", "responses": ["Knead and bake."]})
    assert ok.status_code == 200  # the members keep serving


def test_an_ensemble_entry_with_versions_too_is_refused(tmp_path: Path) -> None:
    write_ensemble(tmp_path, tmp_path.parent / f"{tmp_path.name}-calibration.jsonl")
    (tmp_path / "tiny-a" / ENSEMBLE_FILE).write_text(json.dumps({"members": ["tiny-b", "tiny-c"]}), encoding="utf-8")
    registry = ModelRegistry.load(Settings.from_env({}, model_repository=tmp_path))
    assert registry.skipped == ["tiny-a", ENSEMBLE]


def test_a_misspelt_field_in_ensemble_json_refuses_the_ensemble(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_ensemble(tmp_path, tmp_path.parent / f"{tmp_path.name}-calibration.jsonl")
    spec = json.loads((tmp_path / ENSEMBLE / ENSEMBLE_FILE).read_text(encoding="utf-8"))
    spec["rewrad"] = spec.pop("reward", "mean")  # meant `reward`: never silently the default instead
    (tmp_path / ENSEMBLE / ENSEMBLE_FILE).write_text(json.dumps(spec), encoding="utf-8")
    with caplog.at_level(logging.ERROR):
        registry = ModelRegistry.load(Settings.from_env({}, model_repository=tmp_path))
    assert registry.skipped == [ENSEMBLE] and "rewrad" in caplog.text


def test_the_ensemble_has_its_own_window_with_the_mean_disagreement(client: FlaskClient) -> None:
    responses = [f"answer number {index % 5}" for index in range(40)]
    body = client.post("/v1/score", json={"model": ENSEMBLE, "prompt": "Hi?", "responses": responses}).get_json()
    stats = client.get(f"/v1/models/{ENSEMBLE}/stats").get_json()
    assert (stats["items"], stats["version"], stats["drift"]) == (40, None, None)
    assert stats["mean_disagreement"] == pytest.approx(np.mean(body["std"]))
    assert stats["duplicate_rate"] == pytest.approx(35 / 40)
    assert stats["flags_checked"] == ["truncated", "injected_turn", "no_prompt", "high_disagreement"]
    assert stats["score_quantiles"]["p50"] == pytest.approx(np.quantile(body["conservative"], 0.5))  # the reward's
    client.get("/metrics")  # a scrape refreshes this worker's gauges
    total = REGISTRY.get_sample_value("rmserve_window_total_disagreement", {"model": ENSEMBLE})
    assert total == pytest.approx(np.sum(body["std"]))
    assert REGISTRY.get_sample_value("rmserve_window_flag_rate", {"model": ENSEMBLE, "flag": "high_disagreement"}) == 0
    member = client.get("/v1/models/tiny-a/stats").get_json()
    assert member["items"] >= 40 and member["mean_disagreement"] is None  # members watch what they scored


def test_review_records_of_an_ensemble_carry_the_disagreement_per_response(
    make_app: Callable[..., Flask], ensemble_repository: Path
) -> None:
    client = make_app(model_repository=ensemble_repository, review_prompts=4).test_client()
    disagreed = distinct_token_text(ensemble_repository)
    body = {"model": ENSEMBLE, "prompt": "Split?", "responses": [disagreed, "Knead."]}
    std = client.post("/v1/score", json=body).get_json()["std"]
    client.post("/v1/score", json={"model": ENSEMBLE, "prompt": "Calm?", "responses": ["Knead.", "Bake."]})
    (record,) = client.get(f"/v1/models/{ENSEMBLE}/review").get_json()["records"]  # calm prompts never enter
    assert record["prompt"] == "Split?" and record["flags"][record["responses"].index(disagreed)] == [
        "high_disagreement"
    ]
    assert sorted(record["disagreement"]) == pytest.approx(sorted(std))


def test_score_command_writes_an_ensembles_combinations(
    ensemble_repository: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from rmserve.cli import main

    items = tmp_path / "items.jsonl"
    items.write_text(json.dumps({"prompt": "How do I bake bread?", "response": "Knead and bake."}) + "\n")
    assert main(["score", str(items), "--model", ENSEMBLE, "--model-repository", str(ensemble_repository)]) == 0
    (line,) = [json.loads(text) for text in capsys.readouterr().out.splitlines()]
    assert set(line["members"]) == set(MEMBERS) and line["score"] == line["conservative"]
    assert line["std"] == pytest.approx(np.std(list(line["members"].values())))


def test_openapi_declares_the_reward_parameter_and_the_ensemble_fields(client: FlaskClient) -> None:
    document = client.get("/openapi.json").get_json()
    paths = [
        openapi_path(rule.rule) for rule in client.application.url_map.iter_rules() if "POST" in (rule.methods or ())
    ]
    assert "/v2/models/{name}/infer" in paths
    for path in paths:
        parameters = document["paths"][path]["post"]["parameters"]
        assert [parameter["in"] for parameter in parameters if parameter["name"] == "reward"] == ["query"], path
    schemas = document["components"]["schemas"]
    assert {"reward", "mean", "std", "conservative", "min", "members"} <= set(schemas["ScoreResponse"]["properties"])
    assert "mean_disagreement" in schemas["ModelStats"]["properties"]
    assert "ensemble" in schemas["ModelCard"]["properties"] and "/v1/models/{name}" in document["paths"]


def test_tokens_truncation_and_flags_are_the_members_combined(client: FlaskClient) -> None:
    body = {"prompt": "Hi", "responses": ["long " * 200, "Knead."]}
    ensemble = client.post("/v1/score", json=body | {"model": ENSEMBLE}).get_json()
    members = [client.post("/v1/score", json=body | {"model": name}).get_json() for name in MEMBERS]
    assert ensemble["truncated"] == [True, False] and ensemble["flags"][0] == ["truncated"]
    assert ensemble["tokens"] == [max(member["tokens"][index] for member in members) for index in range(2)]
    assert ensemble["ood_distances"] is None  # no embedding of its own: members' out_of_distribution joins its flags
