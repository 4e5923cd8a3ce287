"""`RMSERVE_RUNTIME=openvino-bf16`: the same versions, verified and served the same way, their graphs run by
OpenVINO's CPU plugin in bf16; scores within bf16's rounding of ONNX Runtime's fp32, in the same order."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from flask import Flask

from rmserve.config import ONNXRUNTIME, OPENVINO_BF16, Settings
from rmserve.core.tokenizer import pad_batch
from rmserve.engine.openvino_session import OpenVinoScorer
from rmserve.engine.version import load_version

# Token rows of mixed lengths, padded into one batch: where padding and the attention mask must agree.
ROWS = [[2, 5, 9, 14, 3], [2, 7, 3], [2, 11, 12, 13, 4, 6, 8, 10, 3], [2, 20, 21, 3]]
COMMITTED_DEFAULT = Path(__file__).parents[2] / "models" / "hh-harmless" / "1"
BF16_TOLERANCE = 2e-2  # bf16 keeps 8 bits of mantissa: relative error about 0.4% per rounding


def both(version_dir: Path) -> tuple[Callable[..., np.ndarray], Callable[..., np.ndarray]]:
    onnx_runtime = load_version(version_dir, 1, runtime=ONNXRUNTIME).scorer
    openvino = load_version(version_dir, 1, runtime=OPENVINO_BF16, runs=2).scorer
    assert isinstance(openvino, OpenVinoScorer)
    return onnx_runtime, openvino


def test_openvino_scores_a_padded_batch_as_onnx_runtime_does_within_bf16(tiny_repository: Path) -> None:
    onnx_runtime, openvino = both(tiny_repository / "tiny" / "1")
    batch = pad_batch(ROWS, 0)
    expected, served = onnx_runtime(*batch), openvino(*batch)
    assert served.shape == (len(ROWS),) and served.dtype == np.float64
    assert np.allclose(served, expected, rtol=BF16_TOLERANCE, atol=BF16_TOLERANCE)
    assert list(np.argsort(served)) == list(np.argsort(expected))
    alone = np.array([openvino(*pad_batch([row], 0))[0] for row in ROWS])
    assert np.allclose(alone, served, rtol=BF16_TOLERANCE, atol=BF16_TOLERANCE)  # padding changes no row's score


@pytest.mark.parametrize("committed", [False, True], ids=["tiny", "committed-default"])
def test_openvino_embeds_where_the_graph_exports_an_embedding(embedding_repository: Path, committed: bool) -> None:
    """The committed default's graph, as `rmserve export` traces it, names its embedding tensor twice."""
    version_dir = COMMITTED_DEFAULT if committed else embedding_repository / "tiny" / "1"
    onnx_runtime, openvino = both(version_dir)
    batch = pad_batch(ROWS, 0)
    (scores, embeddings), (expected_scores, expected_embeddings) = (
        openvino.score_and_embed(*batch),  # type: ignore[attr-defined]
        onnx_runtime.score_and_embed(*batch),  # type: ignore[attr-defined]
    )
    assert embeddings.shape == expected_embeddings.shape
    assert np.allclose(embeddings, expected_embeddings, rtol=BF16_TOLERANCE, atol=BF16_TOLERANCE)
    assert np.allclose(scores, expected_scores, rtol=BF16_TOLERANCE, atol=BF16_TOLERANCE)


def test_each_executor_thread_runs_on_its_own_request(tiny_repository: Path) -> None:
    """Two executors scoring at once get each batch's own scores (an infer request shared would mix them)."""
    _, openvino = both(tiny_repository / "tiny" / "1")
    batches = [pad_batch([row] * (1 + index % 3), 0) for index, row in enumerate(ROWS * 25)]
    alone = [openvino(*batch) for batch in batches]
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(lambda batch: openvino(*batch), batches))
    for expected, served in zip(alone, together, strict=True):
        assert np.array_equal(expected, served)


def test_the_server_says_which_runtime_scores_each_model(make_app: Callable[..., Flask]) -> None:
    onnx_runtime, openvino = make_app().test_client(), make_app(runtime=OPENVINO_BF16).test_client()
    (card,) = openvino.get("/v1/models").get_json()["data"]
    assert card["runtime"] == OPENVINO_BF16
    assert onnx_runtime.get("/v1/models").get_json()["data"][0]["runtime"] == ONNXRUNTIME
    body = {"items": [{"prompt": "How do I bake bread?", "response": text} for text in ("Knead, rise, bake.", "No.")]}
    served = openvino.post("/v1/score", json=body).get_json()
    expected = onnx_runtime.post("/v1/score", json=body).get_json()
    assert np.allclose(served["scores"], expected["scores"], rtol=BF16_TOLERANCE, atol=BF16_TOLERANCE)


def test_an_unknown_runtime_or_a_missing_package_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="RMSERVE_RUNTIME must be one of onnxruntime, openvino-bf16"):
        Settings.from_env({"RMSERVE_RUNTIME": "tensorrt"})
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *rest: None if name == "openvino" else real_find_spec(name, *rest)
    )
    with pytest.raises(ValueError, match=r"RMSERVE_RUNTIME=openvino-bf16 needs OpenVINO: pip install"):
        Settings.from_env({"RMSERVE_RUNTIME": OPENVINO_BF16})
