"""The Open Inference Protocol (KServe v2 / Triton HTTP), in JSON and binary, and from the real tritonclient."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import requests
from flask.testing import FlaskClient

from bench.live_server import running_server

PROMPTS = ["How do I bake bread?", "What is the capital of France?", "hi"]
RESPONSES = ["Mix flour, water, yeast and salt, knead, let it rise, bake at 230C.", "Paris.", "Hello! How can I help?"]


def native_scores(client: FlaskClient) -> list[float]:
    items = [{"prompt": p, "response": r} for p, r in zip(PROMPTS, RESPONSES, strict=True)]
    return client.post("/v1/score", json={"items": items}).get_json()["scores"]


def bytes_input(name: str, texts: list[str]) -> dict[str, object]:
    return {"name": name, "shape": [len(texts)], "datatype": "BYTES", "data": texts}


def test_health_metadata_and_readiness(client: FlaskClient) -> None:
    assert client.get("/v2/health/ready").get_json() == {"ready": True}
    assert client.get("/v2/health/live").get_json() == {"live": True}
    metadata = client.get("/v2/models/tiny").get_json()
    assert metadata["versions"] == ["1"]
    assert [tensor["name"] for tensor in metadata["inputs"]] == ["prompt", "response"]
    assert metadata["outputs"][0] == {"name": "rewards", "datatype": "FP32", "shape": [-1, 1]}
    assert client.get("/v2/models/tiny/ready").get_json() == {"name": "tiny", "ready": True}
    assert client.get("/v2/models/nope/ready").status_code == 404


def test_json_infer_gives_one_reward_per_pair(client: FlaskClient) -> None:
    body = {"id": "r1", "inputs": [bytes_input("prompt", PROMPTS), bytes_input("response", RESPONSES)]}
    answer = client.post("/v2/models/tiny/infer", json=body)
    assert answer.status_code == 200, answer.get_json()
    result = answer.get_json()
    assert (result["model_name"], result["model_version"], result["id"]) == ("tiny", "1", "r1")
    rewards = next(output for output in result["outputs"] if output["name"] == "rewards")
    assert rewards["shape"] == [3, 1] and rewards["datatype"] == "FP32"
    assert rewards["data"] == pytest.approx(native_scores(client), abs=1e-5)


def test_one_input_of_full_texts_like_nemo_aligner(client: FlaskClient) -> None:
    sentences = [f"\n\nHuman: {p}\n\nAssistant: {r}" for p, r in zip(PROMPTS, RESPONSES, strict=True)]
    body = {"inputs": [bytes_input("sentences", sentences)], "outputs": [{"name": "rewards"}]}
    (rewards,) = client.post("/v2/models/tiny/infer", json=body).get_json()["outputs"]
    assert rewards["data"] == pytest.approx(native_scores(client), abs=1e-5)


def test_plain_full_texts_are_responses_without_a_prompt_flagged_so(client: FlaskClient) -> None:
    sentences = ["short", f"\n\nHuman: {PROMPTS[0]}\n\nAssistant: {RESPONSES[0]}"]
    answer = client.post("/v2/models/tiny/infer", json={"inputs": [bytes_input("sentences", sentences)]}).get_json()
    assert answer["parameters"]["flags"] == [["no_prompt"], []]
    rewards = next(output for output in answer["outputs"] if output["name"] == "rewards")
    alone = {"items": [{"messages": [{"role": "assistant", "content": "short"}]}]}
    assert rewards["data"][0] == pytest.approx(client.post("/v1/score", json=alone).get_json()["scores"][0], abs=1e-5)
    assert rewards["data"][1] == pytest.approx(native_scores(client)[0], abs=1e-5)


def test_binary_tensors_in_and_out(client: FlaskClient) -> None:
    def serialize(texts: list[str]) -> bytes:
        return b"".join(struct.pack("<I", len(text.encode())) + text.encode() for text in texts)

    prompt, response = serialize(PROMPTS), serialize(RESPONSES)
    inputs = [
        {"name": "prompt", "shape": [3, 1], "datatype": "BYTES", "parameters": {"binary_data_size": len(prompt)}},
        {"name": "response", "shape": [3, 1], "datatype": "BYTES", "parameters": {"binary_data_size": len(response)}},
    ]
    header = json.dumps({"inputs": inputs, "parameters": {"binary_data_output": True}}).encode()
    answer = client.post(
        "/v2/models/tiny/infer",
        data=header + prompt + response,
        headers={"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"},
    )
    assert answer.status_code == 200, answer.data[:300]
    length = int(answer.headers["Inference-Header-Content-Length"])
    result = json.loads(answer.data[:length])
    rewards = result["outputs"][0]
    assert rewards["parameters"]["binary_data_size"] == 12
    values = np.frombuffer(answer.data[length : length + 12], dtype="<f4")
    assert values.tolist() == pytest.approx(native_scores(client), abs=1e-5)


@pytest.mark.parametrize(
    ("inputs", "field"),
    [
        ([{"name": "prompt", "shape": [1], "datatype": "INT64", "data": [1]}], "inputs[0].datatype"),
        ([bytes_input("prompt", ["a"]), bytes_input("response", ["b", "c"])], "prompt"),
        ([{"name": "sentences", "shape": [2], "datatype": "BYTES", "data": ["a"]}], "inputs[0].shape"),
        ([bytes_input("sentences", ["<|im_start|>user\nno reply<|im_end|>"])], "sentences[0]"),
        ([bytes_input("a", ["x"]), bytes_input("b", ["y"])], "inputs"),
    ],
)
def test_bad_tensors_are_422_naming_the_field(client: FlaskClient, inputs: list[object], field: str) -> None:
    answer = client.post("/v2/models/tiny/infer", json={"inputs": inputs})
    assert answer.status_code == 422
    assert answer.get_json()["error"]["field"] == field


def test_tritonclient_http_scores_over_a_live_server(tiny_repository: Path, tmp_path: Path) -> None:
    import tritonclient.http as triton

    with running_server(tiny_repository, tmp_path / "server.log") as server:
        client = triton.InferenceServerClient(server.base_url.removeprefix("http://"))
        assert client.is_server_ready() and client.is_model_ready("tiny")
        assert client.get_model_metadata("tiny")["outputs"][0]["name"] == "rewards"
        prompt = triton.InferInput("prompt", [3, 1], "BYTES")
        prompt.set_data_from_numpy(np.array(PROMPTS, dtype=object).reshape(3, 1))
        response = triton.InferInput("response", [3, 1], "BYTES")
        response.set_data_from_numpy(np.array(RESPONSES, dtype=object).reshape(3, 1))
        result = client.infer("tiny", [prompt, response])  # binary tensors both ways, tritonclient's default
        rewards = result.as_numpy("rewards")  # None when the answer lacks the output
        assert rewards is not None and rewards.shape == (3, 1) and rewards.dtype == np.float32
        json_result = client.infer(
            "tiny", [prompt, response], outputs=[triton.InferRequestedOutput("rewards", binary_data=False)]
        )
        json_rewards = json_result.as_numpy("rewards")
        assert json_rewards is not None
        np.testing.assert_allclose(json_rewards, rewards, atol=1e-6)
        direct = requests.post(
            f"{server.base_url}/v1/score", json={"prompt": PROMPTS[0], "responses": [RESPONSES[0]]}, timeout=10
        )
        assert direct.json()["scores"][0] == pytest.approx(float(rewards[0, 0]), abs=1e-5)


def binary_request(header: bytes, binary: bytes) -> dict[str, object]:
    return {
        "data": header + binary,
        "headers": {"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"},
    }


@pytest.mark.parametrize(
    ("header", "field"),
    [
        (b'{"inputs": ' + b"[" * 5000 + b"]" * 5000 + b"}", "inputs" + "[0]" * 31),
        (b'{"id": ' + b"7" * 5000 + b', "inputs": []}', "id"),
    ],
    ids=["5,000 levels of nesting", "a 5,000-digit number"],
)
def test_a_binary_requests_json_header_goes_through_the_same_pre_scan(
    client: FlaskClient, header: bytes, field: str
) -> None:
    answer = client.post("/v2/models/tiny/infer", **binary_request(header, b"\x00" * 16))
    assert answer.status_code == 422 and answer.get_json()["error"]["field"] == field


def test_the_body_limit_counts_the_binary_data_too(make_app) -> None:
    client = make_app(max_body_bytes=1000).test_client()
    header = json.dumps({"inputs": [bytes_input("sentences", ["a"])]}).encode()
    answer = client.post("/v2/models/tiny/infer", **binary_request(header, b"\x00" * 2000))
    assert answer.status_code == 413 and answer.get_json()["error"]["code"] == "payload_too_large"
