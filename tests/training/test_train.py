"""`rmserve train` on tiny data: from scratch, with rankings, and fine-tuning a local Hugging Face checkpoint."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from rmserve.training.checkpoint import load_run, torch_score_fn
from rmserve.training.commands import main as cli_main
from rmserve.training.data import read_comparisons
from rmserve.training.evaluate import encode_comparisons, pairwise_accuracy, score_comparisons
from rmserve.training.model import RewardModel
from rmserve.training.options import ModelConfig, TrainConfig
from rmserve.training.train import train

KIND = ["happy to help", "here is how", "step by step", "good question", "certainly"]
UNKIND = ["go away", "no idea", "not my problem", "whatever", "ask someone else"]
FILLER = ["the", "a", "bread", "oven", "water", "time", "and", "then", "you", "it"]
TINY_MODEL = ModelConfig(
    vocab_size=300, d_model=16, n_layers=1, n_heads=2, max_length=48, hash_buckets=1021, char_buckets=1021
)
TINY = {"model": TINY_MODEL, "batch_size": 8}


def response(rng: random.Random, phrases: list[str]) -> str:
    words = [rng.choice(FILLER) for _ in range(rng.randint(3, 8))]
    words.insert(rng.randint(0, len(words)), rng.choice(phrases))
    return " ".join(words) + "."


def write_preferences(path: Path, count: int = 60, seed: int = 0, ranking: bool = False) -> Path:
    """Pairs (or rankings of 3) where the kind response is preferred; learnable in a few steps."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as stream:
        for i in range(count):
            prompt = f"How do I bake bread, attempt {i}?"
            if ranking:
                middle = " ".join(rng.choice(FILLER) for _ in range(5)) + "."
                record = {"prompt": prompt, "responses": [response(rng, KIND), middle, response(rng, UNKIND)]}
            else:
                record = {"prompt": prompt, "chosen": response(rng, KIND), "rejected": response(rng, UNKIND)}
            stream.write(json.dumps(record) + "\n")
    return path


def test_from_scratch_learns_the_preference_and_reloads(tmp_path: Path) -> None:
    data = write_preferences(tmp_path / "prefs.jsonl")
    trained = train(TrainConfig(data=data, out=tmp_path / "run", epochs=2, **TINY))
    trained.save(tmp_path / "run")
    record = trained.training
    assert record["train_comparisons"] == 54 and record["dev_comparisons"] == 6
    assert record["dev_accuracy"] >= 0.8  # the bag of n-grams alone separates kind from unkind
    assert len(record["transformer"][0]["dev_accuracy_per_epoch"]) >= 1

    reloaded = load_run(tmp_path / "run")
    comparisons = read_comparisons(write_preferences(tmp_path / "fresh.jsonl", count=20, seed=1))
    encoded = encode_comparisons(reloaded.input_format(), comparisons)
    before = score_comparisons(torch_score_fn(trained.network.eval()), encoded, 0)
    after = score_comparisons(torch_score_fn(reloaded.network), encoded, 0)
    np.testing.assert_allclose(np.concatenate(before), np.concatenate(after), atol=1e-5)
    assert pairwise_accuracy(after) >= 0.8


def test_same_seed_same_model(tmp_path: Path) -> None:
    data = write_preferences(tmp_path / "prefs.jsonl", count=30)
    without_bag = replace(TINY_MODEL, ngram_orders=0)
    config = TrainConfig(data=data, out=tmp_path / "run", epochs=1, model=without_bag, batch_size=8)
    first, second = train(config), train(config)
    assert first.training["transformer"] == second.training["transformer"]
    for a, b in zip(first.network.state_dict().values(), second.network.state_dict().values(), strict=True):
        assert (a == b).all()


def test_dev_seed_keeps_the_split_while_the_seed_changes_the_transformer(tmp_path: Path) -> None:
    data = write_preferences(tmp_path / "prefs.jsonl", count=40)
    base = TrainConfig(data=data, out=tmp_path / "run", epochs=1, **TINY)
    first = train(base)
    same_split = train(replace(base, seed=1, dev_seed=0))
    other_split = train(replace(base, seed=1))
    assert (first.training["dev_seed"], same_split.training["dev_seed"], other_split.training["dev_seed"]) == (0, 0, 1)
    # The split decides the tokenizer and the bag of n-grams; the seed the transformer's start.
    assert first.tokenizer.to_str() == same_split.tokenizer.to_str() != other_split.tokenizer.to_str()
    first_network, second_network = first.network, same_split.network
    assert isinstance(first_network, RewardModel) and isinstance(second_network, RewardModel)
    assert first_network.bag is not None and second_network.bag is not None
    assert (first_network.bag.weight == second_network.bag.weight).all()
    first_tower, second_tower = first_network.towers[0], second_network.towers[0]
    assert not all((a == b).all() for a, b in zip(first_tower.parameters(), second_tower.parameters(), strict=True))


@pytest.mark.parametrize("loss", ["plackett-luce", "all-pairs"])
def test_rankings_train_with_either_listwise_loss(tmp_path: Path, loss: str) -> None:
    data = write_preferences(tmp_path / "ranked.jsonl", count=30, ranking=True)
    trained = train(TrainConfig(data=data, out=tmp_path / "run", epochs=1, loss=loss, pretrain_epochs=1, **TINY))
    assert trained.training["dev_comparisons"] == 3
    assert 0.0 <= trained.training["dev_accuracy"] <= 1.0
    assert np.isfinite(trained.training["pretrain_loss"]).all()


@pytest.fixture(scope="module")
def hf_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT and a WordPiece tokenizer trained here, saved like a hub checkpoint."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    base = tmp_path_factory.mktemp("tiny-bert")
    texts = list(write_preferences(base / "corpus.jsonl").read_text().splitlines())
    wordpiece = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wordpiece.normalizer = normalizers.BertNormalizer()
    wordpiece.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    wordpiece.train_from_iterator(
        texts, trainers.WordPieceTrainer(vocab_size=200, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=wordpiece,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    tokenizer.save_pretrained(base)
    config = BertConfig(
        vocab_size=wordpiece.get_vocab_size(),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    config.num_labels = 1  # one score: not in the typed signature, so set as transformers' own property
    BertForSequenceClassification(config).save_pretrained(base)
    return base


def test_hf_base_fine_tunes_and_exports_with_its_own_tokenizer(tmp_path: Path, hf_base: Path) -> None:
    data = write_preferences(tmp_path / "prefs.jsonl", count=40)
    out, repository = tmp_path / "run", tmp_path / "repository"
    assert (
        cli_main(
            [
                "train",
                str(data),
                "-o",
                str(out),
                "--base",
                str(hf_base),
                "--epochs",
                "2",
                "--learning-rate",
                "1e-3",
                "--max-length",
                "256",
            ]
        )
        == 0
    )
    trained = load_run(out)
    assert trained.architecture["type"] == "hf-sequence-classification"
    assert trained.max_length == 64  # capped by the checkpoint's position embeddings
    assert (trained.special.bos_id, trained.special.sep_id, trained.special.pad_id) == (2, 3, 0)

    assert (
        cli_main(["export", str(out), "--held-out", str(data), "--repository", str(repository), "--name", "tiny-bert"])
        == 0
    )
    manifest = json.loads((repository / "tiny-bert" / "1" / "manifest.json").read_text())
    assert manifest["parity"]["max_abs_diff"] < 1e-4
    assert manifest["parity"]["ranking_agreement"] == 1.0


TINY_FLAGS = ["--vocab-size", "300", "--d-model", "16", "--layers", "1", "--heads", "2", "--max-length", "48"]


def write_review_export(path: Path, records: int) -> Path:
    """Ranking records as `rmserve review` writes them, once people have put the responses in order."""
    with path.open("w", encoding="utf-8") as stream:
        for index in range(records):
            record = {
                "prompt": f"How do I bake bread, batch {index}?",
                "responses": ["Mix flour, water and yeast, knead, bake.", "no", "go away"],
                "model_scores": [0.2, 2.9, 1.1],
                "flags": [[], ["score_above_training_range"], []],
            }
            stream.write(json.dumps(record) + "\n")
    return path


@pytest.mark.parametrize("records", [3, 12])
def test_a_small_review_export_trains(records: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Three records once left no dev split (`blocks must be 2-D`); one epoch of twelve, one step (a zero
    division in the warm-up schedule)."""
    data = write_review_export(tmp_path / "review.jsonl", records)
    argv = ["train", str(data), "-o", str(tmp_path / "run"), "--epochs", "1", "--hash-buckets", "1021", *TINY_FLAGS]
    assert cli_main(argv) == 0
    assert "dev pairwise accuracy" in capsys.readouterr().out
    training = load_run(tmp_path / "run").training
    assert training["dev_comparisons"] == 1 and training["train_comparisons"] == records - 1


def test_one_record_is_too_few_and_says_so_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_review_export(tmp_path / "review.jsonl", 1)
    assert cli_main(["train", str(data), "-o", str(tmp_path / "run"), *TINY_FLAGS]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "only 1 comparison" in error and "at least 2" in error
