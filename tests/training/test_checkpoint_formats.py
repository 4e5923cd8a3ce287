"""`rmserve import` of each checkpoint format as its library saves it, served, against that library's own reward.

OpenRLHF reward models, TRL and LLaMA-Factory value-head models, PEFT LoRA adapters (the real library)
and multi-output heads: the served raw reward equals the library's forward pass on the text the
served model's chat template renders (tiny Llama 3 models, three conversations of mixed lengths in one
padded batch).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from flask import Flask

from rmserve.core.manifest import Manifest
from rmserve.training.checkpoint_formats import CheckpointError
from rmserve.training.commands import main as cli_main
from rmserve.training.importer import import_checkpoint
from rmserve.training.options import HeadChoice, ImportConfig
from tests.hf_checkpoints import write_checkpoint
from tests.training.library_checkpoints import (
    causal_lm,
    openrlhf_rewards,
    saved_value_head,
    value_head_rewards,
    write_openrlhf,
    write_value_head,
)
from tests.training.test_import import CONVERSATIONS

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama causal LM with Llama 3's chat template: what reward models are trained from."""
    return causal_lm(tmp_path_factory.mktemp("base") / "llama")


def rendered(checkpoint: Path) -> list[str]:
    """The conversations as the checkpoint's chat template renders them, ending in the end-of-turn token."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    return [tokenizer.apply_chat_template(messages, tokenize=False) for messages in CONVERSATIONS]


def served(make_app: Callable[..., Flask], config: ImportConfig) -> tuple[Manifest, Any]:
    """Import, then a test client of a server of the imported model."""
    manifest = import_checkpoint(config)
    return manifest, make_app(model_repository=config.repository, models=(config.name,)).test_client()


def served_raw(client: Any) -> list[float]:
    answer = client.post("/v1/score", json={"items": [{"messages": c} for c in CONVERSATIONS]})
    assert answer.status_code == 200, answer.get_json()
    raw: list[float] = answer.get_json()["raw_scores"]
    return raw


@pytest.mark.parametrize(("prefix", "normalize"), [("score", False), ("value_head", True)])
def test_an_openrlhf_reward_model_answers_get_reward_as_openrlhf_serves_it(
    prefix: str, normalize: bool, base: Path, tmp_path: Path, make_app: Callable[..., Flask]
) -> None:
    checkpoint = write_openrlhf(tmp_path / "openrlhf", base, prefix=prefix, normalize=normalize)
    config = ImportConfig(checkpoint=checkpoint, name="orm", repository=tmp_path / "repo", max_length=256)
    manifest, client = served(make_app, config)
    texts = rendered(checkpoint)

    # Each text ends in <|eot_id|>, which is also the pad token: the value is read there, at the last attended
    # token, where a sequence classifier would skip back to the last non-pad one.
    assert served_raw(client) == pytest.approx(openrlhf_rewards(checkpoint, texts, normalize=False), abs=TOLERANCE)
    header = "<|start_header_id|>assistant<|end_header_id|>\n\n"
    prompts = [text[: text.rindex(header) + len(header)] for text in texts]  # OpenRLHF's prompts: up to the response
    rewarded = client.post("/get_reward", json={"query": texts, "prompts": prompts}).get_json()
    expected = openrlhf_rewards(checkpoint, texts, normalize=normalize)
    assert rewarded["rewards"] == pytest.approx(expected, abs=TOLERANCE)
    assert manifest.architecture["checkpoint_format"] == "openrlhf"
    assert (manifest.normalization.mean, manifest.normalization.std) == ((0.75, 2.5) if normalize else (0.0, 1.0))


@pytest.mark.parametrize("separate_head", [False, True], ids=["trl", "llama-factory"])
def test_a_value_head_model_scores_as_its_library_reads_it(
    separate_head: bool, base: Path, tmp_path: Path, make_app: Callable[..., Flask]
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    checkpoint = write_value_head(tmp_path / "value-head", base, separate_head=separate_head)
    config = ImportConfig(checkpoint=checkpoint, name="vhead", repository=tmp_path / "repo", max_length=256)
    manifest, client = served(make_app, config)
    language_model = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    expected = value_head_rewards(language_model, saved_value_head(checkpoint), tokenizer, rendered(checkpoint))
    assert served_raw(client) == pytest.approx(expected, abs=TOLERANCE)
    assert manifest.architecture["checkpoint_format"] == "value-head"
    assert manifest.parity is not None and manifest.parity.max_abs_diff == pytest.approx(0.0, abs=TOLERANCE)


def test_a_peft_lora_reward_adapter_is_merged_and_scores_as_peft_does(
    base: Path, tmp_path: Path, make_app: Callable[..., Flask]
) -> None:
    """TRL's RewardTrainer with a LoRA config saves a SEQ_CLS adapter over a causal LM: the head is in the adapter."""
    peft = pytest.importorskip("peft", reason="the [train] extra installs peft")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    classifier = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
    lora = peft.LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    adapted = peft.get_peft_model(classifier, peft.LoraConfig(**{**lora.to_dict(), "init_lora_weights": False}))
    torch.manual_seed(4)
    with torch.no_grad():  # a trained head: it lives in the adapter (modules_to_save), not in the base
        adapted.base_model.model.score.modules_to_save["default"].weight.normal_(0.0, 1.0)
    adapter = tmp_path / "adapter"
    adapted.save_pretrained(adapter)
    AutoTokenizer.from_pretrained(base).save_pretrained(adapter)

    config = ImportConfig(checkpoint=adapter, name="lora", repository=tmp_path / "repo", max_length=256)
    manifest, client = served(make_app, config)
    reloaded = peft.PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(base), adapter)
    tokenizer = AutoTokenizer.from_pretrained(adapter)
    with torch.no_grad():  # PEFT's own forward, adapter unmerged, one text at a time
        expected = [
            float(reloaded.eval()(**tokenizer(text, return_tensors="pt", add_special_tokens=False)).logits[0, 0])
            for text in rendered(adapter)
        ]
    assert served_raw(client) == pytest.approx(expected, abs=TOLERANCE)
    assert manifest.architecture["checkpoint_format"] == "sequence-classification + peft-lora"


@pytest.mark.parametrize("head_file", ["value_head.safetensors", "pytorch_model.bin"], ids=["llama-factory", "trl"])
def test_a_lora_adapter_with_a_value_head_is_merged(
    head_file: str, base: Path, tmp_path: Path, make_app: Callable[..., Flask]
) -> None:
    """LLaMA-Factory saves the head in value_head.safetensors; TRL's value-head wrapper of a PeftModel saves only the
    head's state dict as pytorch_model.bin beside the adapter."""
    peft = pytest.importorskip("peft", reason="the [train] extra installs peft")
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    lora = peft.LoraConfig(task_type="CAUSAL_LM", r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    adapted = peft.get_peft_model(AutoModelForCausalLM.from_pretrained(base), lora)
    adapter = tmp_path / "adapter"
    adapted.save_pretrained(adapter)
    torch.manual_seed(5)
    head = {"v_head.summary.weight": torch.randn(1, 32), "v_head.summary.bias": torch.randn(1)}
    if head_file.endswith(".safetensors"):
        save_file(head, adapter / head_file, metadata={"format": "pt"})
    else:
        torch.save(head, adapter / head_file)

    config = ImportConfig(checkpoint=adapter, name="lora-vhead", repository=tmp_path / "repo", max_length=256)
    manifest, client = served(make_app, config)
    reloaded = peft.PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter).eval()
    texts = rendered(base)
    expected = value_head_rewards(reloaded, head, AutoTokenizer.from_pretrained(base), texts)
    assert served_raw(client) == pytest.approx(expected, abs=TOLERANCE)
    assert manifest.architecture["checkpoint_format"] == "value-head + peft-lora"


@pytest.fixture(scope="module")
def three_outputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sequence classifier with three outputs (a multi-objective reward model)."""
    from transformers import AutoModelForSequenceClassification

    directory = write_checkpoint(tmp_path_factory.mktemp("heads") / "three", "llama")
    model = AutoModelForSequenceClassification.from_pretrained(directory, num_labels=3, ignore_mismatched_sizes=True)
    torch.manual_seed(6)
    with torch.no_grad():
        model.score.weight.normal_(0.0, 1.0)
    model.save_pretrained(directory)
    return directory


def transformers_logits(checkpoint: Path) -> torch.Tensor:
    """[conversations, outputs] from transformers' forward pass, one conversation at a time."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()
    with torch.no_grad():
        inputs = [tokenizer(text, return_tensors="pt", add_special_tokens=False) for text in rendered(checkpoint)]
        return torch.cat([model(**item).logits for item in inputs])


@pytest.mark.parametrize(
    ("flags", "reward"),
    [
        (["--head", "2"], lambda logits: logits[:, 2]),
        (["--head-weights", "0.5,-1,2"], lambda logits: logits @ torch.tensor([0.5, -1.0, 2.0])),
    ],
    ids=["index", "weights"],
)
def test_a_multi_output_head_serves_the_output_or_weighted_sum_chosen(
    flags: list[str],
    reward: Callable[[torch.Tensor], torch.Tensor],
    three_outputs: Path,
    tmp_path: Path,
    make_app: Callable[..., Flask],
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["import", str(three_outputs), "--name", "multi", "--repository", str(tmp_path), *flags]
    assert cli_main(argv) == 0
    assert "checkpoint format" in capsys.readouterr().out
    client = make_app(model_repository=tmp_path, models=("multi",)).test_client()
    expected = reward(transformers_logits(three_outputs)).tolist()
    assert served_raw(client) == pytest.approx(expected, abs=TOLERANCE)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ([], "has 3 outputs; name the reward with --head INDEX or --head-weights w,w,w"),
        (["--head", "3"], "--head 3: .* has outputs 0 to 2"),
        (["--head-weights", "1,2"], "--head-weights: 2 weights for .*'s 3 outputs"),
        (["--head-weights", "1,x,2"], "must be numbers separated by commas, got '1,x,2'"),
    ],
)
def test_a_multi_output_head_needs_a_valid_choice_in_one_line(
    flags: list[str], message: str, three_outputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["import", str(three_outputs), "--name", "multi", "--repository", str(tmp_path / "repo"), *flags]
    try:
        status = cli_main(argv)
    except SystemExit as argparse_exit:  # a malformed flag value: argparse's own usage error
        status = int(str(argparse_exit.code))
    assert status == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert re.search(message, line), line
    assert not (tmp_path / "repo" / "multi").exists()


def test_a_causal_lm_without_a_reward_head_is_refused(base: Path, tmp_path: Path) -> None:
    """transformers would give it a randomly initialized head and score at random."""
    with pytest.raises(CheckpointError, match=r"has no score\.weight .* Its scores would be random"):
        import_checkpoint(ImportConfig(checkpoint=base, name="lm", repository=tmp_path))


def test_an_adapter_over_a_base_not_on_disk_asks_for_base(base: Path, tmp_path: Path) -> None:
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    record = {"base_model_name_or_path": "meta-llama/Meta-Llama-3-8B", "task_type": "SEQ_CLS", "peft_type": "LORA"}
    (adapter / "adapter_config.json").write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="'meta-llama/Meta-Llama-3-8B', which is not a local checkpoint; pass"):
        import_checkpoint(ImportConfig(checkpoint=adapter, name="lora", repository=tmp_path / "repo"))


def test_the_head_choice_is_recorded(three_outputs: Path, tmp_path: Path) -> None:
    config = ImportConfig(checkpoint=three_outputs, name="multi", repository=tmp_path, head=HeadChoice(index=1))
    manifest = import_checkpoint(config)
    assert manifest.architecture["reward"] == "output 1, read at the classifier's own pooling"
