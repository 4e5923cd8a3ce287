"""The model repository: verified versions only, highest (or pinned) served, bad ones skipped."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from rmserve.app import create_app
from rmserve.config import Settings
from rmserve.core.manifest import MANIFEST_FILE, MODEL_FILE
from rmserve.core.repository import InvalidModel
from rmserve.engine.registry import ModelRegistry
from rmserve.engine.version import load_model, load_version
from tests.tiny_model import write_version


def two_versions(root: Path) -> Path:
    write_version(root / "rm" / "1", name="rm", version=1, seed=1)
    write_version(root / "rm" / "2", name="rm", version=2, seed=2)
    return root


def test_highest_version_is_served(tmp_path: Path) -> None:
    model = load_model(two_versions(tmp_path), "rm", intra_op_threads=1)
    assert model.manifest.version == 2


def test_pinned_version_is_served(tmp_path: Path) -> None:
    settings = Settings.from_env({"RMSERVE_PINNED_VERSIONS": "rm=1"}, model_repository=two_versions(tmp_path))
    registry = ModelRegistry.load(settings)
    assert registry.get("rm").version.manifest.version == 1


def test_tampered_model_is_refused_and_the_good_version_keeps_serving(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = two_versions(tmp_path)
    with (root / "rm" / "2" / MODEL_FILE).open("ab") as model_file:
        model_file.write(b"\x00")  # one byte appended: the sha256 no longer matches
    settings = Settings.from_env({}, model_repository=root)
    with caplog.at_level(logging.ERROR):
        registry = ModelRegistry.load(settings).start()
    assert "sha256" in caplog.text and "rm/2" in caplog.text
    client = create_app(settings, registry).test_client()
    body = client.post("/v1/score", json={"prompt": "hi", "responses": ["hello"]}).get_json()
    assert body["version"] == 1
    assert client.get("/v1/models").get_json()["data"][0]["version"] == 1
    registry.stop(timeout=5)


@pytest.mark.parametrize(
    ("breakage", "reason"),
    [
        (lambda d: (d / MANIFEST_FILE).write_text("{not json"), "invalid"),
        (lambda d: (d / MANIFEST_FILE).write_text(json.dumps({"name": "rm"})), "invalid"),
        (lambda d: (d / MODEL_FILE).unlink(), "no model.onnx"),
        (lambda d: (d / MODEL_FILE).write_bytes(b"not onnx"), "sha256"),
        (lambda d: d.rename(d.parent / "7"), "manifest says rm/1"),
    ],
)
def test_broken_versions_say_why(tmp_path: Path, breakage, reason: str) -> None:
    directory = tmp_path / "rm" / "1"
    write_version(directory, name="rm", version=1)
    breakage(directory)
    target = directory if directory.exists() else tmp_path / "rm" / "7"
    with pytest.raises(InvalidModel, match=reason):
        load_version(target, intra_op_threads=1)


def test_graph_that_does_not_match_the_manifest_is_refused(tmp_path: Path) -> None:
    """A valid sha256 over a graph that returns the wrong shape is still refused."""
    import onnx
    from onnx import TensorProto, helper

    directory = tmp_path / "rm" / "1"
    manifest = write_version(directory, name="rm", version=1)
    graph = helper.make_graph(
        [helper.make_node("Cast", ["input_ids"], ["score"], to=TensorProto.FLOAT)],  # [batch, seq], not [batch]
        "wrong",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "s"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["b", "s"]),
        ],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["b", "s"])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(directory / MODEL_FILE))
    from rmserve.core.manifest import file_digests, sha256_of

    update = {"sha256": sha256_of(directory / MODEL_FILE), "files": file_digests(directory)}
    manifest.model_copy(update=update).write(directory)
    with pytest.raises(InvalidModel, match="expected \\[batch\\]"):
        load_version(directory, intra_op_threads=1)


def test_no_valid_version_is_an_error(tmp_path: Path) -> None:
    write_version(tmp_path / "rm" / "1", name="rm", version=1)
    (tmp_path / "rm" / "1" / MODEL_FILE).write_bytes(b"tampered")
    with pytest.raises(InvalidModel, match="no valid any version"):
        load_model(tmp_path, "rm", intra_op_threads=1)


def test_unknown_default_model_is_refused(tiny_repository: Path) -> None:
    with pytest.raises(ValueError, match="RMSERVE_DEFAULT_MODEL"):
        ModelRegistry.load(Settings.from_env({}, model_repository=tiny_repository, default_model="other"))
