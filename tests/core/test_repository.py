"""The model repository: verified versions only, highest (or pinned) served, bad ones skipped."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from rmserve.app import create_app
from rmserve.config import Settings
from rmserve.core.embedding import EMBEDDING_FILE, EmbeddingGaussian
from rmserve.core.manifest import MANIFEST_FILE, MODEL_FILE, TOKENIZER_FILE, Manifest
from rmserve.core.repository import InvalidModel, version_dirs
from rmserve.engine.registry import ModelRegistry
from rmserve.engine.version import load_model, load_version
from tests.conftest import EMBEDDING_WIDTH, window_responses
from tests.reliability_report import record
from tests.tiny_model import (
    ENSEMBLE,
    ENSEMBLE_MEMBERS,
    mean_weight_graph,
    reseal,
    token_vectors,
    token_weights,
    write_ensemble,
    write_version,
    write_version_with_stats,
)


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
    assert registry.get("rm").served_version == 1


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
    reseal(directory, manifest)
    with pytest.raises(InvalidModel, match="expected \\[batch\\]"):
        load_version(directory, intra_op_threads=1)


def test_no_valid_version_is_an_error(tmp_path: Path) -> None:
    write_version(tmp_path / "rm" / "1", name="rm", version=1)
    (tmp_path / "rm" / "1" / MODEL_FILE).write_bytes(b"tampered")
    with pytest.raises(InvalidModel, match=r"rm: no valid version \(.*rm/1/model.onnx: sha256 .* does not match"):
        load_model(tmp_path, "rm", intra_op_threads=1)


def test_unknown_default_model_is_refused(tiny_repository: Path) -> None:
    with pytest.raises(ValueError, match="RMSERVE_DEFAULT_MODEL"):
        ModelRegistry.load(Settings.from_env({}, model_repository=tiny_repository, default_model="other"))


# --- bad entries never stop the repository ------------------------------------------------------


def mixed_repository(root: Path) -> Path:
    """One good model, one whose only version has a truncated graph, and two non-model directories."""
    write_version(root / "good" / "1", name="good", version=1)
    write_version(root / "broken" / "1", name="broken", version=1)
    graph = root / "broken" / "1" / MODEL_FILE
    graph.write_bytes(graph.read_bytes()[:100])  # truncated copy
    (root / "lost+found").mkdir()
    (root / ".snapshot").mkdir()
    return root


def refused(entry: str, reason: str) -> float:
    from rmserve import metrics

    return metrics.REPOSITORY_REFUSED.labels(entry, reason)._value.get()


def test_bad_entries_are_skipped_logged_and_counted_and_the_rest_serves(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings.from_env({}, model_repository=mixed_repository(tmp_path))
    with caplog.at_level(logging.WARNING):
        registry = ModelRegistry.load(settings).start()
    assert sorted(registry.models) == ["good"] and registry.skipped == ["broken"]
    assert "skipping model broken" in caplog.text and "lost+found: not a model directory" in caplog.text
    assert refused("broken/1", "invalid_version") == 1 and refused("broken", "no_valid_version") == 1
    assert refused("lost+found", "not_a_model") == 1 and refused(".snapshot", "not_a_model") == 1
    client = create_app(settings, registry).test_client()
    assert client.get("/readyz").get_json() == {"status": "ready", "models": ["good"], "skipped": ["broken"]}
    assert client.post("/v1/score", json={"prompt": "hi", "responses": ["hello"]}).status_code == 200
    registry.stop(timeout=5)
    record(
        "Bad models: one bad entry in the repository",
        "a repository with a good model, a model whose only graph is truncated, `lost+found` and a dot-dir",
        "the good model serves; `broken` skipped (log line, rmserve_repository_refused no_valid_version and "
        "invalid_version), both non-model dirs ignored (log line, not_a_model); /readyz lists served and skipped",
    )


def test_a_model_named_in_rmserve_models_that_cannot_load_stops_start_up(tmp_path: Path) -> None:
    settings = Settings.from_env({"RMSERVE_MODELS": "good,broken"}, model_repository=mixed_repository(tmp_path))
    with pytest.raises(InvalidModel, match=r"broken.*RMSERVE_MODELS"):
        ModelRegistry.load(settings)


def test_no_loadable_model_at_all_stops_start_up_and_says_why(tmp_path: Path) -> None:
    root = mixed_repository(tmp_path)
    (root / "good" / "1" / MODEL_FILE).write_bytes(b"tampered")
    with pytest.raises(InvalidModel, match=r"no model .* could be loaded \(skipped: broken, good\)"):
        ModelRegistry.load(Settings.from_env({}, model_repository=root))


@pytest.mark.parametrize("name", ["../tiny", "/etc", "tiny/1", ".hidden", "lost+found", ""])
def test_model_names_never_leave_the_repository(tiny_repository: Path, name: str) -> None:
    with pytest.raises(InvalidModel, match="not a model name"):
        ModelRegistry.load(Settings.from_env({}, model_repository=tiny_repository, models=(name,)))


def test_a_request_cannot_name_a_path_for_a_model(client) -> None:
    for name in ("../tiny", "/tmp", "tiny/1"):
        response = client.post("/v1/score", json={"model": name, "prompt": "a", "responses": ["b"]})
        assert response.status_code == 404 and response.get_json()["error"]["field"] == "model"


def rewrite_manifest(directory: Path, **changes: object) -> None:
    manifest = json.loads((directory / MANIFEST_FILE).read_text())
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            manifest[section][field] = value
        else:
            manifest[section] = value
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest))  # json writes NaN/Infinity as such


refusals: list[str] = []


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"normalization__mean": float("nan")}, "normalization.mean"),
        ({"normalization__std": float("inf")}, "normalization.std"),
        ({"normalization__mean": float("-inf")}, "normalization.mean"),
        ({"tokens__pad_id": 100_000}, "tokens.pad_id = 100000 is outside the vocabulary"),
        ({"tokens__eos_id": -1}, "tokens.eos_id = -1 is outside the vocabulary"),
        ({"tokens__bos_id": 400}, "tokens.bos_id = 400 is outside the vocabulary"),
    ],
)
def test_manifest_numbers_that_do_not_check_out_are_refused(tmp_path: Path, changes: dict, reason: str) -> None:
    directory = tmp_path / "rm" / "1"
    write_version(directory, name="rm", version=1)
    rewrite_manifest(directory, **changes)
    with pytest.raises(InvalidModel, match=re.escape(reason)):
        load_version(directory, intra_op_threads=1)
    refusals.append(reason.split(" ", maxsplit=1)[0])
    if len(refusals) == 6:
        record(
            "Bad models: numbers that do not check out",
            "manifests with NaN / +inf / -inf normalization, pad/bos/eos ids past the vocabulary or negative",
            f"all 6 refused at load with one log line naming the field ({', '.join(sorted(set(refusals)))})",
        )


def test_missing_tokenizer_and_wrong_graph_inputs_are_refused(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    from rmserve.core.manifest import TOKENIZER_FILE

    no_tokenizer = tmp_path / "a" / "1"
    write_version(no_tokenizer, name="a", version=1)
    (no_tokenizer / TOKENIZER_FILE).unlink()
    with pytest.raises(InvalidModel, match=r"no tokenizer\.json"):
        load_version(no_tokenizer, intra_op_threads=1)

    wrong_inputs = tmp_path / "b" / "1"
    manifest = write_version(wrong_inputs, name="b", version=1)
    graph = helper.make_graph(
        [helper.make_node("Cast", ["tokens"], ["score"], to=TensorProto.FLOAT)],
        "wrong_inputs",
        [helper.make_tensor_value_info("tokens", TensorProto.INT64, ["b"])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["b"])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(wrong_inputs / MODEL_FILE))
    reseal(wrong_inputs, manifest)
    with pytest.raises(InvalidModel, match="need input_ids and attention_mask"):
        load_version(wrong_inputs, intra_op_threads=1)


def test_sha256_covers_every_file_a_version_serves_from(tmp_path: Path) -> None:
    from rmserve.core.manifest import MODEL_FILE, TOKENIZER_FILE

    tampered = tmp_path / "a" / "1"
    write_version(tampered, name="a", version=1)
    assert set(Manifest.read(tampered).files) == {MODEL_FILE, TOKENIZER_FILE}
    with (tampered / TOKENIZER_FILE).open("a") as tokenizer:
        tokenizer.write(" ")
    with pytest.raises(InvalidModel, match=r"tokenizer\.json: sha256 .* does not match"):
        load_version(tampered, intra_op_threads=1)

    unlisted = tmp_path / "b" / "1"
    write_version(unlisted, name="b", version=1)
    (unlisted / "model.onnx.data").write_bytes(b"weights nobody verified")
    with pytest.raises(InvalidModel, match=r"not covered by the manifest.s sha256 list: model\.onnx\.data"):
        load_version(unlisted, intra_op_threads=1)

    escaping = tmp_path / "c" / "1"
    manifest = write_version(escaping, name="c", version=1)
    manifest.model_copy(update={"files": {**manifest.files, "../../etc/passwd": "0" * 64}}).write(escaping)
    with pytest.raises(InvalidModel, match="which is not a file in the version"):
        load_version(escaping, intra_op_threads=1)

    legacy = tmp_path / "d" / "1"
    manifest = write_version(legacy, name="d", version=1)
    manifest.model_copy(update={"files": {}}).write(legacy)  # written before `files` existed
    assert load_version(legacy, intra_op_threads=1).manifest.version == 1
    record(
        "Bad models: files the sha256 does not cover",
        "a tokenizer.json changed by one byte, an unlisted extra weights file, a `files` entry pointing outside",
        "each version refused at load with one log line naming the file; a manifest from before `files` still loads",
    )


def test_a_model_card_beside_the_versions_is_no_version_and_the_sha256_check_still_covers_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = two_versions(tmp_path / "repository")
    write_ensemble(root, tmp_path / "calibration.jsonl")
    for entry in ("rm", ENSEMBLE):
        (root / entry / "README.md").write_text(f"# {entry}\n\nWhat it is, how it was made.\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        registry = ModelRegistry.load(Settings.from_env({}, model_repository=root))
    assert sorted(registry.models) == sorted(["rm", ENSEMBLE, *(name for name, *_ in ENSEMBLE_MEMBERS)])
    assert registry.skipped == [] and "README" not in caplog.text
    assert [version.name for version in version_dirs(root, "rm")] == ["2", "1"]
    assert registry.get("rm").served_version == 2

    (root / "rm" / "2" / "README.md").write_text("# rm\n", encoding="utf-8")  # inside a version: unverified
    with pytest.raises(InvalidModel, match=r"not covered by the manifest.s sha256 list: README\.md"):
        load_version(root / "rm" / "2", intra_op_threads=1)


def test_a_corrupt_graph_whose_sha256_matches_is_refused(tmp_path: Path) -> None:

    directory = tmp_path / "rm" / "1"
    manifest = write_version(directory, name="rm", version=1)
    graph = directory / MODEL_FILE
    graph.write_bytes(graph.read_bytes()[: graph.stat().st_size // 2])  # truncated, then re-signed
    reseal(directory, manifest)
    with pytest.raises(InvalidModel, match="cannot load"):
        load_version(directory, intra_op_threads=1)


def embedding_version(directory: Path) -> Manifest:
    """A valid version whose graph exports an embedding, with its Gaussian beside it."""
    responses = window_responses()
    prompts = ["\n\nHuman: Hi?\n\nAssistant:"] * len(responses)
    return write_version_with_stats(directory, prompts, responses, embedding_width=EMBEDDING_WIDTH, name="rm")


def test_embedding_statistics_that_do_not_check_out_are_refused_with_a_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "rm" / "1"
    manifest = embedding_version(directory)
    assert load_version(directory, intra_op_threads=1).embedding is not None
    stats_file = directory / EMBEDDING_FILE
    good = stats_file.read_bytes()

    stats_file.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))  # one bit flipped
    with caplog.at_level(logging.ERROR), pytest.raises(InvalidModel, match="no valid"):
        load_model(tmp_path, "rm", intra_op_threads=1)
    assert re.search(r"refusing model version: .*embedding_stats\.npz: sha256 .* does not match", caplog.text)

    stats_file.unlink()
    with pytest.raises(InvalidModel, match=r"lists 'embedding_stats\.npz', which is not a file"):
        load_version(directory, intra_op_threads=1)
    stats_file.write_bytes(good)
    unlisted = {name: digest for name, digest in manifest.files.items() if name != EMBEDDING_FILE}
    manifest.model_copy(update={"files": unlisted}).write(directory)
    with pytest.raises(InvalidModel, match=r"not covered by the manifest.s sha256 list: embedding_stats\.npz"):
        load_version(directory, intra_op_threads=1)
    manifest.model_copy(update={"files": {}}).write(directory)  # no sha256 list at all: nothing vouches for it
    with pytest.raises(InvalidModel, match=r"training_stats\.embedding names 'embedding_stats\.npz', files does not"):
        load_version(directory, intra_op_threads=1)

    # Re-signed statistics of another width: the manifest says 8, the file 5.
    EmbeddingGaussian.fit(np.random.default_rng(0).normal(size=(60, 5))).save(stats_file)
    reseal(directory, manifest)
    with pytest.raises(InvalidModel, match=r"embedding_stats\.npz: dim 5, rank \d+; .* says dim 8"):
        load_version(directory, intra_op_threads=1)
    stats_file.write_bytes(b"not an npz at all")
    reseal(directory, manifest)
    with pytest.raises(InvalidModel, match="unreadable embedding statistics"):
        load_version(directory, intra_op_threads=1)


def test_embedding_statistics_need_a_graph_that_exports_an_embedding_of_their_width(tmp_path: Path) -> None:
    import onnx

    directory = tmp_path / "rm" / "1"
    manifest = embedding_version(directory)
    vocab_size = Tokenizer.from_file(str(directory / TOKENIZER_FILE)).get_vocab_size()
    onnx.save(mean_weight_graph(token_weights(vocab_size)), str(directory / MODEL_FILE))  # the score alone
    reseal(directory, manifest)
    with pytest.raises(InvalidModel, match=r"the manifest has training_stats\.embedding, the graph has no output"):
        load_version(directory, intra_op_threads=1)

    narrow = mean_weight_graph(token_weights(vocab_size), token_vectors(vocab_size, EMBEDDING_WIDTH - 1))
    onnx.save(narrow, str(directory / MODEL_FILE))
    reseal(directory, manifest)
    with pytest.raises(InvalidModel, match=r"embedding output of shape \(2, 7\).*have dim 8"):
        load_version(directory, intra_op_threads=1)
    record(
        "Bad models: embedding statistics",
        "embedding_stats.npz with one bit flipped, missing, unlisted, of another width or not an npz; a graph "
        "without the embedding output or of another width",
        "each version refused at load with one log line saying which and why",
    )
