"""`rmserve import` on tiny local checkpoints (BERT, DeBERTa-v2, Llama, Qwen2, Gemma), served and scored.

The served score must equal transformers' own forward pass on the text transformers renders
(`apply_chat_template`, or the tokenizer's pair template), for items of mixed lengths in one batch.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from flask import Flask

from rmserve.core.embedding import EMBEDDING_FILE, EmbeddingGaussian
from rmserve.core.manifest import MODEL_FILE, Manifest, file_digests
from rmserve.core.repository import InvalidModel, verify_version
from rmserve.training.checkpoint_formats import CheckpointError
from rmserve.training.commands import main as cli_main
from rmserve.training.importer import import_checkpoint
from rmserve.training.onnx_files import EXTERNAL_DATA_FILE
from rmserve.training.options import ImportConfig
from tests.hf_checkpoints import ENCODERS, FAMILIES, write_checkpoint

CONVERSATIONS = [
    [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello!"}],
    [
        {"role": "user", "content": "How do I bake bread?"},
        {"role": "assistant", "content": "Do you have yeast?"},
        {"role": "user", "content": "yes"},
        {"role": "assistant", "content": "Mix flour, water, yeast and salt, knead, let it rise, then bake at 230C."},
    ],
    [{"role": "user", "content": "What is the capital of France?"}, {"role": "assistant", "content": "Paris."}],
]


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    """A repository with each family imported (built-in probes, no calibration), and the checkpoints."""
    root = tmp_path_factory.mktemp("import")
    checkpoints = {family: write_checkpoint(root / "hf" / family, family) for family in FAMILIES}
    for family, checkpoint in checkpoints.items():
        import_checkpoint(ImportConfig(checkpoint=checkpoint, name=family, repository=root / "repo", max_length=256))
    return root / "repo", checkpoints


def transformers_inputs(tokenizer: Any, conversations: list[list[dict[str, str]]]) -> list[dict[str, torch.Tensor]]:
    """What transformers feeds its model per conversation: its own rendering and tokenization."""
    inputs = []
    for messages in conversations:
        if tokenizer.chat_template:
            ids = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
            inputs.append({"input_ids": torch.tensor([ids])})
            continue
        # The pair template; an earlier conversation is its HH transcript, as rmserve documents.
        earlier = messages[:-1]
        transcript = "".join(f"\n\n{'Human' if m['role'] == 'user' else 'Assistant'}: {m['content']}" for m in earlier)
        prompt = earlier[0]["content"] if len(earlier) == 1 else transcript.lstrip()
        # With the segment ids the tokenizer gives (BERT reads them).
        inputs.append(dict(tokenizer(prompt, messages[-1]["content"], return_tensors="pt")))
    return inputs


def transformers_scores(checkpoint: Path, conversations: list[list[dict[str, str]]]) -> list[float]:
    """What transformers computes: its own rendering and tokenization, the model's forward pass, item by item."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()
    with torch.no_grad():
        return [float(model(**inputs).logits[0, 0]) for inputs in transformers_inputs(tokenizer, conversations)]


def transformers_head_inputs(checkpoint: Path, family: str, conversations: list[list[dict[str, str]]]) -> np.ndarray:
    """The hidden state each classification head reads [items, hidden], taken from transformers' own modules:
    BERT's pooler output, DeBERTa's context pooler on its [CLS] state, a decoder's last token's final state."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()
    states = []
    with torch.no_grad():
        for inputs in transformers_inputs(tokenizer, conversations):
            if family == "bert":
                state = model.bert(**inputs).pooler_output[0]
            elif family == "deberta":
                state = model.pooler(model.deberta(**inputs).last_hidden_state)[0]
            else:
                state = model.model(**inputs).last_hidden_state[0, -1]
            states.append(state.numpy())
    return np.array(states)


@pytest.mark.parametrize("family", FAMILIES)
def test_imported_model_scores_like_transformers_everywhere(
    family: str, imported: tuple[Path, dict[str, Path]], make_app: Callable[..., Flask]
) -> None:
    repository, checkpoints = imported
    client = make_app(model_repository=repository, models=(family,)).test_client()
    expected = transformers_scores(checkpoints[family], CONVERSATIONS)

    # /v1/score, messages: three conversations of mixed lengths in one padded batch
    answer = client.post("/v1/score", json={"items": [{"messages": c} for c in CONVERSATIONS]})
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["raw_scores"] == pytest.approx(expected, abs=1e-3)
    assert answer.get_json()["truncated"] == [False] * 3

    # /v1/score, plain prompt + response
    single_turn = [CONVERSATIONS[0], CONVERSATIONS[2]]
    items = [{"prompt": c[0]["content"], "response": c[-1]["content"]} for c in single_turn]
    plain = client.post("/v1/score", json={"items": items}).get_json()
    assert plain["raw_scores"] == pytest.approx([expected[0], expected[2]], abs=1e-3)

    # /classify (veRL): a ChatML string, whatever the served model's own template is
    chatml = [
        "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in conversation)
        for conversation in CONVERSATIONS
    ]
    classified = client.post("/classify", json={"input": chatml, "use_activation": False}).get_json()
    normalized = answer.get_json()["scores"]
    assert [entry["probs"][-1] for entry in classified["data"]] == pytest.approx(normalized, abs=1e-3)

    # /get_reward (OpenRLHF): Llama 3 text with prompts, end-of-turn tokens after the response
    prompts = [
        "<|begin_of_text|>"
        + "".join(f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n{m['content']}<|eot_id|>" for m in c[:-1])
        + "<|start_header_id|>assistant<|end_header_id|>\n\n"
        for c in CONVERSATIONS
    ]
    queries = [prompt + c[-1]["content"] + "<|eot_id|>" for prompt, c in zip(prompts, CONVERSATIONS, strict=True)]
    rewarded = client.post("/get_reward", json={"query": queries, "prompts": prompts}).get_json()
    assert rewarded["rewards"] == pytest.approx(normalized, abs=1e-3)
    assert rewarded["extra_logs"]["rm_injected_turn"] == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("family", FAMILIES)
def test_manifest_records_format_parity_and_every_file(family: str, imported: tuple[Path, dict[str, Path]]) -> None:
    repository, _ = imported
    manifest = Manifest.read(repository / family / "1")
    assert manifest.input_format["style"] == ("pair" if family in ENCODERS else "chat_template")
    assert manifest.parity is not None
    assert manifest.parity.max_abs_diff == pytest.approx(0.0, abs=1e-3)
    assert manifest.parity.ranking_agreement == 1.0
    assert manifest.parity.tokenization_matches_transformers == 1.0
    assert set(manifest.files) == {"model.onnx", "tokenizer.json"}
    assert manifest.files == file_digests(repository / family / "1")
    assert (manifest.architecture["segment_ids"] == "none") == (family != "bert")


@pytest.mark.parametrize("family", FAMILIES)
def test_the_embedding_output_is_the_hidden_state_the_head_reads(
    family: str, imported: tuple[Path, dict[str, Path]]
) -> None:
    """Three conversations of mixed lengths in one padded batch: the graph's embedding is transformers' own."""
    from transformers import AutoTokenizer

    from rmserve.core.tokenizer import pad_batch
    from rmserve.engine.session import OnnxScorer

    repository, checkpoints = imported
    version = repository / family / "1"
    expected = transformers_head_inputs(checkpoints[family], family, CONVERSATIONS)
    inputs = transformers_inputs(AutoTokenizer.from_pretrained(checkpoints[family]), CONVERSATIONS)
    pad_id = Manifest.read(version).tokens.pad_id
    raw, embeddings = OnnxScorer(version / MODEL_FILE, 1).score_and_embed(
        *pad_batch([item["input_ids"][0].tolist() for item in inputs], pad_id)
    )
    np.testing.assert_allclose(embeddings, expected, atol=1e-4)
    np.testing.assert_allclose(raw, transformers_scores(checkpoints[family], CONVERSATIONS), atol=1e-4)
    parity = Manifest.read(version).parity
    assert parity is not None and parity.embedding_max_abs_diff == pytest.approx(0.0, abs=1e-4)


@pytest.mark.parametrize("family", ["bert", "qwen2"])
def test_an_import_with_calibration_flags_by_its_calibration_embeddings(
    family: str, imported: tuple[Path, dict[str, Path]], tmp_path: Path, make_app: Callable[..., Flask]
) -> None:
    _, checkpoints = imported
    calibration = tmp_path / "calibration.jsonl"
    chosen = ["Knead, rise, bake at 230C.", "Paris is the capital.", "Hello! How can I help?", "The fox jumps."]
    rejected = ["no", "I will not say.", "go away", "Reward models score responses."]
    pairs = zip(chosen, rejected, strict=True)
    lines = [{"prompt": "How do I bake bread?", "chosen": c, "rejected": r} for c, r in pairs]
    calibration.write_text("".join(json.dumps(line) + "\n" for line in lines))
    config = ImportConfig(checkpoint=checkpoints[family], name=family, repository=tmp_path, calibration=calibration)
    manifest = import_checkpoint(config)
    stats = manifest.training_stats
    assert stats is not None and stats.responses == 8 and stats.embedding is not None
    assert stats.embedding.dim == 32 and stats.embedding.rank == 1  # hidden size; 8 responses support 1 direction
    assert set(manifest.files) == {MODEL_FILE, "tokenizer.json", EMBEDDING_FILE}

    client = make_app(model_repository=tmp_path, models=(family,)).test_client()
    answer = client.post("/v1/score", json={"items": [{"messages": c} for c in CONVERSATIONS]}).get_json()
    gaussian = EmbeddingGaussian.load(tmp_path / family / "1" / EMBEDDING_FILE)
    expected = gaussian.distances(transformers_head_inputs(checkpoints[family], family, CONVERSATIONS))
    assert answer["ood_distances"] == pytest.approx(expected.tolist(), rel=1e-3)
    flagged = [("out_of_distribution" in flags) for flags in answer["flags"]]
    assert flagged == [bool(d > stats.embedding.distance.p99) for d in expected]


def test_a_tampered_tokenizer_is_refused(imported: tuple[Path, dict[str, Path]], tmp_path: Path) -> None:
    repository, _ = imported
    copy = tmp_path / "qwen2" / "1"
    copy.parent.mkdir()
    import shutil

    shutil.copytree(repository / "qwen2" / "1", copy)
    tokenizer = json.loads((copy / "tokenizer.json").read_text())
    tokenizer["added_tokens"][0]["content"] = "<|tampered|>"
    (copy / "tokenizer.json").write_text(json.dumps(tokenizer))
    with pytest.raises(InvalidModel, match=r"tokenizer\.json: sha256"):
        verify_version(copy)
    (copy / "tokenizer.json").unlink()
    shutil.copy(repository / "qwen2" / "1" / "tokenizer.json", copy)
    (copy / "extra.bin").write_bytes(b"x")
    with pytest.raises(InvalidModel, match="not covered"):
        verify_version(copy)


@pytest.mark.slow  # three more exports (int8, external data): ~5 s
def test_cli_import_with_calibration_int8_and_external_data_then_eval(
    imported: tuple[Path, dict[str, Path]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, checkpoints = imported
    calibration = tmp_path / "calibration.jsonl"
    lines = [
        {"prompt": "How do I bake bread?", "chosen": "Knead, rise, bake at 230C.", "rejected": "no"},
        {"prompt": "What is the capital of France?", "chosen": "Paris.", "rejected": "I will not say."},
        {
            "chosen": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello!"}],
            "rejected": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "go away"}],
        },
    ]
    calibration.write_text("".join(json.dumps(line) + "\n" for line in lines))
    argv = ["import", str(checkpoints["llama"]), "--name", "llama-cli", "--repository", str(tmp_path), "--int8"]
    assert cli_main([*argv, "--calibration", str(calibration)]) == 0
    assert "import summary" in capsys.readouterr().out
    manifest = Manifest.read(tmp_path / "llama-cli" / "1")
    assert manifest.quantization == "int8-weights"
    assert manifest.parity is not None and manifest.parity.int8_agreement_with_fp32 is not None
    assert 0.0 <= manifest.parity.int8_agreement_with_fp32 <= 1.0
    assert manifest.normalization.std > 0 and manifest.normalization.mean != 0.0
    assert manifest.source is not None and manifest.source.calibration_comparisons == 3
    stats = manifest.training_stats  # the int8 graph's own, on the 6 calibration responses
    assert stats is not None and stats.responses == 6 and stats.embedding is not None and stats.embedding.dim == 32

    import_checkpoint(
        ImportConfig(checkpoint=checkpoints["qwen2"], name="qwen2-ext", repository=tmp_path, external_data_above=0)
    )
    version = tmp_path / "qwen2-ext" / "1"
    assert (version / EXTERNAL_DATA_FILE).is_file()
    assert set(Manifest.read(version).files) == {MODEL_FILE, EXTERNAL_DATA_FILE, "tokenizer.json"}
    verify_version(version)

    assert cli_main(["eval", "llama-cli", str(calibration), "--repository", str(tmp_path)]) == 0
    assert "pairwise accuracy on 3 pairs" in capsys.readouterr().out


def test_a_checkpoint_with_several_labels_is_refused(tmp_path: Path) -> None:
    from transformers import AutoConfig

    checkpoint = write_checkpoint(tmp_path / "two", "qwen2")
    config = AutoConfig.from_pretrained(checkpoint)
    config.num_labels = 2
    config.save_pretrained(checkpoint)
    with pytest.raises(CheckpointError, match="has 2 outputs; name the reward with --head INDEX"):
        import_checkpoint(ImportConfig(checkpoint=checkpoint, name="two", repository=tmp_path / "repo"))
    assert not (tmp_path / "repo" / "two" / "1").exists()


def test_a_template_that_refuses_every_conversation_is_refused_at_load(
    imported: tuple[Path, dict[str, Path]], tmp_path: Path
) -> None:
    import shutil

    from rmserve.engine.version import load_version

    repository, _ = imported
    copy = tmp_path / "qwen2" / "1"
    shutil.copytree(repository / "qwen2" / "1", copy)
    manifest = Manifest.read(copy)
    refusing = {**manifest.input_format, "template": "{{ raise_exception('bring a system message') }}"}
    manifest.model_copy(update={"input_format": refusing}).write(copy)
    with pytest.raises(InvalidModel, match=r"cannot lay out a test item: .*bring a system message"):
        load_version(copy, intra_op_threads=1)


@pytest.mark.slow  # a real gunicorn server
def test_triton_and_verl_clients_score_an_imported_decoder_over_http(
    imported: tuple[Path, dict[str, Path]], tmp_path: Path
) -> None:
    import numpy as np
    import requests
    import tritonclient.http as triton

    from bench.live_server import running_server

    repository, checkpoints = imported
    expected = transformers_scores(checkpoints["qwen2"], CONVERSATIONS)
    chatml = [
        "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in conversation)
        for conversation in CONVERSATIONS
    ]
    with running_server(repository, tmp_path / "server.log", env={"RMSERVE_MODELS": "qwen2"}) as server:
        sentences = triton.InferInput("sentences", [3], "BYTES")
        sentences.set_data_from_numpy(np.array(chatml, dtype=object))
        client = triton.InferenceServerClient(server.base_url.removeprefix("http://"))
        raw = client.infer("qwen2", [sentences]).as_numpy("raw_rewards")  # None when the answer lacks it
        assert raw is not None
        np.testing.assert_allclose(raw[:, 0], expected, atol=1e-3)
        body = {"model": "qwen2", "input": chatml[1], "use_activation": False}
        classified = requests.post(f"{server.base_url}/classify", json=body, timeout=30).json()
        rewards = client.infer("qwen2", [sentences]).as_numpy("rewards")
        assert rewards is not None
        assert classified["data"][-1]["probs"][-1] == pytest.approx(float(rewards[1, 0]), abs=1e-4)
