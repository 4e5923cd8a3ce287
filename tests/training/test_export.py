"""`rmserve export` writes a version the server loads, scoring exactly as the trained torch model did."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from flask import Flask

from rmserve.core.embedding import DEFAULT_RANK, EMBEDDING_FILE, EmbeddingGaussian
from rmserve.core.manifest import MODEL_FILE, Manifest, QuantizedFrom, sha256_of
from rmserve.core.tokenizer import pad_batch
from rmserve.engine.session import OnnxScorer
from rmserve.engine.version import load_version
from rmserve.training.checkpoint import load_run, torch_score_fn
from rmserve.training.commands import main as cli_main
from rmserve.training.cpu_isa import int8_isa
from rmserve.training.data import read_comparisons
from rmserve.training.evaluate import encode_comparisons
from rmserve.training.export import export, export_onnx
from rmserve.training.options import ExportConfig
from rmserve.training.stats import add_training_stats
from tests.training.test_train import TINY_MODEL


def test_fp32_export_matches_torch_and_loads_in_the_server(run: Path, tmp_path: Path) -> None:
    held_out = run.parent / "held_out.jsonl"
    manifest = export(ExportConfig(run=run, repository=tmp_path, name="tiny", version=3, held_out=held_out))
    version_dir = tmp_path / "tiny" / "3"
    assert Manifest.read(version_dir) == manifest
    assert manifest.sha256 == sha256_of(version_dir / MODEL_FILE)
    assert manifest.quantization is None
    assert manifest.parity is not None
    assert manifest.parity.max_abs_diff == pytest.approx(0.0, abs=1e-4)
    assert manifest.parity.ranking_agreement == 1.0
    assert manifest.evaluation.n == 20
    assert set(manifest.evaluation.baselines) == {"shorter_wins", "longer_wins", "bag_of_words"}
    assert manifest.normalization.std > 0
    stats = manifest.training_stats
    assert stats is not None and stats.responses == 2 * 40  # both responses of every training pair
    assert (
        stats.raw_score.min <= stats.raw_score.p01 <= stats.raw_score.p50 <= stats.raw_score.p99 <= stats.raw_score.max
    )
    assert 0 < stats.response_tokens.p50 <= stats.response_tokens.max
    # The pooled features both towers' heads read, side by side, and their Gaussian beside the graph.
    embedding = stats.embedding
    assert embedding is not None and embedding.dim == 2 * 2 * TINY_MODEL.d_model
    assert 1 <= embedding.rank <= DEFAULT_RANK and EMBEDDING_FILE in manifest.files
    assert 0 < embedding.distance.p50 <= embedding.distance.p99 <= embedding.distance.max
    gaussian = EmbeddingGaussian.load(version_dir / EMBEDDING_FILE)
    assert (gaussian.dim, gaussian.rank) == (embedding.dim, embedding.rank)

    # A version exported without statistics gets the same ones back, without retraining.
    without = manifest.model_copy(update={"training_stats": None})
    without.write(version_dir)
    assert add_training_stats(version_dir).training_stats == stats

    # What the server computes for a pair equals the torch model's offline scores.
    served = load_version(version_dir, intra_op_threads=1)
    trained = load_run(run)
    comparisons = read_comparisons(held_out, layouts=served.format.layouts)[:4]
    sequences = [group[0] for group in encode_comparisons(served.format, comparisons)]
    assert sequences == [group[0] for group in encode_comparisons(trained.input_format(), comparisons)]
    input_ids, attention_mask = pad_batch(sequences, manifest.tokens.pad_id)
    np.testing.assert_allclose(
        served.scorer(input_ids, attention_mask), torch_score_fn(trained.network)(input_ids, attention_mask), atol=1e-4
    )
    # ... and so does the embedding, whose distances the server measures.
    served_raw, served_embeddings = served.scorer.score_and_embed(input_ids, attention_mask)
    with torch.no_grad():
        torch_raw, torch_embeddings = trained.network.score_and_embedding(
            torch.from_numpy(input_ids), torch.from_numpy(attention_mask)
        )
    np.testing.assert_allclose(served_raw, torch_raw.numpy(), atol=1e-4)
    np.testing.assert_allclose(served_embeddings, torch_embeddings.numpy(), atol=1e-4)
    assert served.embedding is not None


def test_http_raw_scores_equal_the_trained_model_offline(
    run: Path, tmp_path: Path, make_app: Callable[..., Flask]
) -> None:
    export(ExportConfig(run=run, repository=tmp_path, name="tiny", version=1, held_out=run.parent / "held_out.jsonl"))
    client = make_app(model_repository=tmp_path, models=("tiny",)).test_client()
    prompt, responses = "How do I bake bread?", ["happy to help: knead the bread.", "go away."]
    reply = client.post("/v1/score", json={"model": "tiny", "prompt": prompt, "responses": responses})
    assert reply.status_code == 200

    trained = load_run(run)
    sequences = [e.input_ids for e in trained.input_format().encode_texts([prompt] * 2, responses)]
    offline = torch_score_fn(trained.network)(*pad_batch(sequences, 0))
    np.testing.assert_allclose(reply.get_json()["raw_scores"], offline, atol=1e-4)


def test_onnx_graph_has_dynamic_batch_and_sequence_axes(run: Path, tmp_path: Path) -> None:
    export(ExportConfig(run=run, repository=tmp_path, name="tiny", version=1, held_out=run.parent / "held_out.jsonl"))
    scorer = OnnxScorer(tmp_path / "tiny" / "1" / MODEL_FILE, intra_op_threads=1)
    network = torch_score_fn(load_run(run).network)
    for batch, length in [(1, 5), (3, 17), (7, 64)]:
        rng = np.random.default_rng(batch)
        sequences = [[2, *rng.integers(5, 300, size=length - 3).tolist(), 3, 3] for _ in range(batch)]
        sequences[-1] = [*sequences[-1][: max(4, length // 2)], 3]  # one shorter row: padding matters
        input_ids, attention_mask = pad_batch(sequences, 0)
        np.testing.assert_allclose(scorer(input_ids, attention_mask), network(input_ids, attention_mask), atol=1e-4)


def test_int8_export_agrees_with_fp32_and_says_so(run: Path, tmp_path: Path) -> None:
    held_out = run.parent / "held_out.jsonl"
    assert (
        cli_main(
            ["export", str(run), "--held-out", str(held_out), "--repository", str(tmp_path), "--name", "tiny", "--int8"]
        )
        == 0
    )
    manifest = Manifest.read(tmp_path / "tiny" / "1")
    assert manifest.quantization == "int8-weights"
    assert manifest.parity is not None
    assert manifest.parity.int8_agreement_with_fp32 == pytest.approx(1.0, abs=0.1)
    # int8 numbers depend on the CPU's int8 kernels: each names the instruction set it was measured with.
    assert manifest.evaluation.isa == manifest.parity.int8_isa == int8_isa()
    served = load_version(tmp_path / "tiny" / "1", intra_op_threads=1)
    assert served.manifest == manifest
    assert manifest.training_stats is not None and manifest.training_stats.embedding is not None
    assert served.embedding is not None and served.embedding.dim == manifest.training_stats.embedding.dim


def test_eval_prints_model_accuracy_beside_baselines(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    held_out = run.parent / "held_out.jsonl"
    export(ExportConfig(run=run, repository=tmp_path, name="tiny", version=1, held_out=held_out))
    capsys.readouterr()
    report = tmp_path / "report"
    argv = ["eval", "tiny", str(held_out), "--repository", str(tmp_path), "--threads", "1", "--report", str(report)]
    assert cli_main(argv) == 0
    printed = capsys.readouterr().out
    assert "pairwise accuracy on 20 pairs" in printed
    for row in ("tiny v1", "shorter response wins", "longer response wins", "bag of words"):
        assert row in printed
    numbers = json.loads((report / "report.json").read_text())
    assert numbers["title"] == "tiny v1 on held_out.jsonl" and numbers["pairs"] == 20
    assert f"{numbers['pairwise_accuracy']:.4f}" in printed  # the picture's accuracy is the table's
    assert (report / "report.png").is_file()


def test_ranking_agreement_counts_float_noise_ties_as_agreeing() -> None:
    from rmserve.training.evaluate import ranking_agreement

    torch_scores = [np.array([1.0, 1.0 + 1e-7]), np.array([2.0, 0.0])]
    assert ranking_agreement(torch_scores, [np.array([1.0 + 1e-7, 1.0]), np.array([2.0, 0.0])]) == 1.0
    assert ranking_agreement(torch_scores, [np.array([1.0, 1.0]), np.array([0.0, 2.0])]) == 0.5


def test_export_leaves_no_alarming_warning_for_the_user_to_judge(run: Path, tmp_path: Path) -> None:
    """torch's "negative values ... incorrect results" indexing warning is harmless here and silenced."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export_onnx(load_run(run).network, tmp_path / "model.onnx")
    assert [str(w.message) for w in caught if "incorrect results" in str(w.message)] == []


def test_quantize_writes_an_int8_copy_the_server_loads_with_its_own_numbers(run: Path, tmp_path: Path) -> None:
    held_out = run.parent / "held_out.jsonl"
    fp32 = export(ExportConfig(run=run, repository=tmp_path, name="tiny", version=1, held_out=held_out))
    assert cli_main(
        ["quantize", str(tmp_path / "tiny" / "1"), "--held-out", str(held_out), "--repository", str(tmp_path),
         "--name", "tiny-int8", "--max-batch-tokens", "512"]
    ) == 0  # fmt: skip
    version_dir = tmp_path / "tiny-int8" / "1"
    manifest = Manifest.read(version_dir)
    assert manifest.batch_tokens == 512 and fp32.serving is None  # recorded only where measured
    assert manifest.quantization == "int8-weights" and manifest.name == "tiny-int8"
    assert manifest.sha256 == sha256_of(version_dir / MODEL_FILE) != fp32.sha256
    parity = manifest.parity
    assert parity is not None and manifest.evaluation.isa == parity.int8_isa == int8_isa()
    assert parity.quantized_from == QuantizedFrom(name="tiny", version=1, sha256=fp32.sha256)
    assert parity.int8_agreement_with_fp32 is not None and 0.0 <= parity.int8_agreement_with_fp32 <= 1.0
    assert manifest.evaluation.n == fp32.evaluation.n and manifest.evaluation.baselines == fp32.evaluation.baselines
    assert load_version(version_dir, intra_op_threads=1).manifest == manifest
    # Its embedding statistics are the int8 graph's own, not a copy of fp32's.
    assert manifest.training_stats is not None and manifest.training_stats.embedding is not None
    assert manifest.files[EMBEDDING_FILE] != fp32.files[EMBEDDING_FILE]
